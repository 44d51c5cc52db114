/* holofs._fuseshim: lets the kernel keep opens, closes and directory listings of a holofs
 * mount to itself, under pyfuse3.
 *
 * The FUSE protocol lets a filesystem answer OPEN and OPENDIR with ENOSYS once: the kernel then
 * never sends OPEN/RELEASE (or OPENDIR/RELEASEDIR) again, keeps file pages across opens
 * (FOPEN_KEEP_CACHE) and caches directory listings (FOPEN_CACHE_DIR). A warm run of an
 * interpreter then costs the daemon nothing for the files and directories it has seen. READ and
 * READDIR still arrive (for pages or listings not cached yet), with file handle 0 and the inode
 * number as the only way to tell files apart -- but pyfuse3 hands its handlers the file handle
 * only, never the inode, so a pyfuse3 filesystem cannot use this by itself.
 *
 * This module bridges that. Loaded into the global symbol scope before pyfuse3 (see
 * holofs.frontends.fuse_shim), it defines fuse_session_new, which pyfuse3's extension then
 * binds to instead of libfuse's. It copies pyfuse3's operation table, answers open and opendir
 * with ENOSYS itself, and, for read and readdir(plus) requests carrying handle 0, puts
 * NO_OPEN_FH | inode into the handle before calling pyfuse3's own callback; then it calls
 * libfuse's fuse_session_new with the copy. Everything else is pyfuse3's, unchanged.
 * active() tells Python whether a session was set up this way (False: pyfuse3 was loaded before
 * this module, or its table is bigger than libfuse's header here says -- the mount then works
 * the ordinary way, with a handle per open). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define FUSE_USE_VERSION 32
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <fuse_lowlevel.h>
#include <stdint.h>
#include <string.h>

#define NO_OPEN_FH (1ULL << 63)

typedef struct fuse_session *(*session_new_t)(struct fuse_args *, const struct fuse_lowlevel_ops *, size_t, void *);
typedef int (*reply_err_t)(fuse_req_t, int);
typedef void (*read_t)(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);

typedef void (*open_t)(fuse_req_t, fuse_ino_t, struct fuse_file_info *);
typedef void (*init_t)(void *, struct fuse_conn_info *);

static struct fuse_lowlevel_ops table;
static read_t their_read, their_readdir, their_readdirplus;
static open_t their_open, their_opendir;
static init_t their_init;
static reply_err_t reply_err;
static int wanted = 1, installed, open_ok, opendir_ok;

/* The kernel says in its INIT whether it takes ENOSYS for "no open needed" (Linux 4.20 for
 * files, 5.1 for directories); an older one would fail the open with it. */
static void init_conn(void *userdata, struct fuse_conn_info *conn) {
    if (their_init != NULL)
        their_init(userdata, conn);
    open_ok = (conn->capable & FUSE_CAP_NO_OPEN_SUPPORT) != 0;
    opendir_ok = (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) != 0;
}

static void open_file(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (open_ok)
        reply_err(req, ENOSYS);
    else
        their_open(req, ino, fi);
}

static void open_dir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (opendir_ok)
        reply_err(req, ENOSYS);
    else
        their_opendir(req, ino, fi);
}

static void stamp(fuse_ino_t ino, struct fuse_file_info *fi) {
    if (fi != NULL && fi->fh == 0)
        fi->fh = NO_OPEN_FH | (uint64_t)ino;
}

static void read_by_inode(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    stamp(ino, fi);
    their_read(req, ino, size, off, fi);
}

static void readdir_by_inode(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    stamp(ino, fi);
    their_readdir(req, ino, size, off, fi);
}

static void readdirplus_by_inode(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    stamp(ino, fi);
    their_readdirplus(req, ino, size, off, fi);
}

/* dl_iterate_phdr callback: the path of a loaded libfuse3 of any soname version. */
static int find_libfuse(struct dl_phdr_info *info, size_t size, void *out) {
    (void)size;
    if (info->dlpi_name != NULL && strstr(info->dlpi_name, "/libfuse3.so") != NULL) {
        *(const char **)out = info->dlpi_name;
        return 1;
    }
    return 0;
}

/* libfuse as loaded for pyfuse3 (never loads anything itself). */
static void *loaded_libfuse(void) {
    void *lib = dlopen("libfuse3.so.3", RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        const char *path = NULL;
        dl_iterate_phdr(find_libfuse, &path);
        if (path != NULL)
            lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    }
    return lib;
}

__attribute__((visibility("default"))) struct fuse_session *
fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op, size_t op_size, void *userdata) {
    void *lib = loaded_libfuse();
    session_new_t real = lib ? (session_new_t)dlsym(lib, "fuse_session_new") : NULL;
    reply_err = lib ? (reply_err_t)dlsym(lib, "fuse_reply_err") : NULL;
    if (lib)
        dlclose(lib); /* only drops the reference taken above: the caller keeps libfuse loaded */
    if (real == NULL || real == fuse_session_new) {
        errno = ENOSYS;
        return NULL;
    }
    installed = open_ok = opendir_ok = 0;
    if (!wanted || reply_err == NULL || op_size > sizeof table || op->read == NULL || op->open == NULL ||
        op->opendir == NULL)
        return real(args, op, op_size, userdata);
    memset(&table, 0, sizeof table);
    memcpy(&table, op, op_size);
    their_read = op->read;
    their_readdir = op->readdir;
    their_readdirplus = op->readdirplus;
    their_open = op->open;
    their_opendir = op->opendir;
    their_init = op->init;
    table.init = init_conn;
    table.open = open_file;
    table.opendir = open_dir;
    table.read = read_by_inode;
    if (their_readdir != NULL)
        table.readdir = readdir_by_inode;
    if (their_readdirplus != NULL)
        table.readdirplus = readdirplus_by_inode;
    struct fuse_session *se = real(args, &table, op_size, userdata);
    installed = se != NULL;
    return se;
}

static PyObject *shim_active(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(arg)) {
    return PyBool_FromLong(installed && open_ok);
}

static PyObject *shim_installed(PyObject *Py_UNUSED(self), PyObject *Py_UNUSED(arg)) {
    return PyBool_FromLong(installed);
}

static PyObject *shim_configure(PyObject *Py_UNUSED(self), PyObject *arg) {
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    wanted = on;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"active", shim_active, METH_NOARGS,
     "True once the last FUSE session leaves opens to the kernel (set up here, and the kernel's INIT allows it)."},
    {"installed", shim_installed, METH_NOARGS, "True if the last FUSE session was set up here."},
    {"configure", shim_configure, METH_O, "configure(on): whether the next FUSE session leaves opens to the kernel."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "holofs._fuseshim", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fuseshim(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddObject(m, "NO_OPEN_FH", PyLong_FromUnsignedLongLong(NO_OPEN_FH)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
