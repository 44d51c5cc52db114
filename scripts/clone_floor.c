/* clone_floor: the system calls of a fresh raw-library restore, with nothing around them.
 *
 * A lower bound for `holofs materialize` of a raw (uncompressed) hololib, measured by
 * scripts/bench_materialize.py beside holofs and uv: the per-file calls holofs' native fast
 * path makes (open the blob, fstat it, create the file, FICLONE, futimens, close both), in
 * POSIX threads, from a plan the benchmark writes beforehand (untimed) from the catalog.
 * No interpreter, no catalog parsing, no verification, no relocation (the few files with
 * rewrites are cloned unchanged), no state file: what is left when all of that costs nothing.
 * Where the filesystems cannot share extents the data is copied with copy_file_range.
 *
 *   clone_floor PLAN LIBRARY TARGET THREADS
 *
 * PLAN: NUL-terminated fields, records one after the other:
 *   "D" parent-index name            a directory (the first record is the root: parent -1, name "")
 *   "F" dir-index name blob size mode a regular file (blob: path relative to LIBRARY; mode: octal)
 * Directories come parents first and are made first (one thread); then the files (THREADS
 * threads taking 32 files in plan order at a time); then every directory gets RCC's time.
 * TARGET must not exist. Exit status 0, or 1 with a message on the first error. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNIT 32
#define MOTHER_TIME 1610000000

typedef struct {
    int dir;
    const char *name, *blob;
    long long size;
    mode_t mode;
} file_t;

static file_t *files;
static long nfiles;
static int *dir_fds;
static int lib_fd, no_reflink;
static long next_unit;
static const struct timespec times[2] = {{MOTHER_TIME, 0}, {MOTHER_TIME, 0}};

static void die(const char *what, const char *name) {
    fprintf(stderr, "clone_floor: %s %s: %s\n", what, name, strerror(errno));
    exit(1);
}

static char *field(char **p, char *end) {
    char *f = *p, *nul = memchr(f, 0, (size_t)(end - f));
    if (nul == NULL) {
        fprintf(stderr, "clone_floor: truncated plan\n");
        exit(1);
    }
    *p = nul + 1;
    return f;
}

static void copy_data(int dst, int src, const file_t *f) {
    loff_t in = 0, out = 0;
    while (in < f->size) {
        ssize_t n = copy_file_range(src, &in, dst, &out, (size_t)(f->size - in), 0);
        if (n <= 0)
            die("copy_file_range", f->name);
    }
}

static void make_file(const file_t *f) {
    struct stat st;
    int src = openat(lib_fd, f->blob, O_RDONLY | O_CLOEXEC);
    if (src < 0 || fstat(src, &st) < 0)
        die("open", f->blob);
    int dst = openat(dir_fds[f->dir], f->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, f->mode);
    if (dst < 0)
        die("create", f->name);
    int cloned = 0;
    if (f->size > 0 && !__atomic_load_n(&no_reflink, __ATOMIC_RELAXED)) {
        cloned = ioctl(dst, FICLONE, src) == 0;
        if (!cloned && errno != EOPNOTSUPP && errno != EXDEV && errno != EINVAL)
            die("FICLONE", f->name);
        if (!cloned) /* these filesystems cannot share extents: copy from now on */
            __atomic_store_n(&no_reflink, 1, __ATOMIC_RELAXED);
    }
    if (f->size > 0 && !cloned)
        copy_data(dst, src, f);
    if (futimens(dst, times) < 0)
        die("futimens", f->name);
    close(dst);
    close(src);
}

static void *worker(void *arg) {
    (void)arg;
    for (;;) {
        long start = __atomic_fetch_add(&next_unit, UNIT, __ATOMIC_RELAXED);
        if (start >= nfiles)
            return NULL;
        long end = start + UNIT < nfiles ? start + UNIT : nfiles;
        for (long i = start; i < end; i++)
            make_file(&files[i]);
    }
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: clone_floor PLAN LIBRARY TARGET THREADS\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (in == NULL)
        die("open", argv[1]);
    fseek(in, 0, SEEK_END);
    long len = ftell(in);
    rewind(in);
    char *plan = malloc((size_t)len + 1), *p = plan, *end = plan + len;
    if (plan == NULL || fread(plan, 1, (size_t)len, in) != (size_t)len)
        die("read", argv[1]);
    fclose(in);
    long cap = len / 8 + 2; /* more than the records a plan of this size can hold */
    files = calloc((size_t)cap, sizeof *files);
    dir_fds = calloc((size_t)cap, sizeof *dir_fds);
    if (files == NULL || dir_fds == NULL)
        die("alloc", "");
    lib_fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (lib_fd < 0)
        die("open", argv[2]);
    umask(0); /* the plan's modes exactly, as holofs gives them (it chmods what a umask took) */
    if (mkdir(argv[3], 0750) < 0)
        die("mkdir", argv[3]);
    int ndirs = 0;
    while (p < end) {
        char *kind = field(&p, end);
        if (kind[0] == 'D') {
            int parent = atoi(field(&p, end));
            char *name = field(&p, end);
            int fd = parent < 0 ? open(argv[3], O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                                : (mkdirat(dir_fds[parent], name, 0750) < 0
                                       ? -1
                                       : openat(dir_fds[parent], name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (fd < 0)
                die("mkdir", name);
            dir_fds[ndirs++] = fd;
        } else {
            file_t *f = &files[nfiles++];
            f->dir = atoi(field(&p, end));
            f->name = field(&p, end);
            f->blob = field(&p, end);
            f->size = atoll(field(&p, end));
            f->mode = (mode_t)strtol(field(&p, end), NULL, 8);
        }
    }
    int nthreads = atoi(argv[4]) < 1 ? 1 : atoi(argv[4]) > 64 ? 64 : atoi(argv[4]);
    pthread_t tids[64];
    for (int i = 1; i < nthreads; i++)
        if (pthread_create(&tids[i], NULL, worker, NULL) != 0)
            die("pthread_create", "");
    worker(NULL);
    for (int i = 1; i < nthreads; i++)
        pthread_join(tids[i], NULL);
    for (int d = ndirs - 1; d >= 0; d--) {
        if (futimens(dir_fds[d], times) < 0)
            die("futimens", "a directory");
        close(dir_fds[d]);
    }
    return 0;
}
