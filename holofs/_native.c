/* holofs._native: the per-file loop of a fresh reflink restore, in C.
 *
 * Python costs 30-50 us per file around six system calls that take the kernel ~25 us; the
 * loop below does the same calls with the GIL released. It is an accelerator only: every
 * item it does not finish is left untouched (no file created) or removed again, and the
 * caller redoes it on the general Python path, which also produces the user-facing error.
 *
 * clone_files(lib_fd, dir_fd, blobs, names, modes, sizes, chmod_mask, mtime_ns) -> list
 *   blobs[i]: path of the raw blob relative to lib_fd; names[i]: new file under dir_fd
 *   (created O_EXCL|O_NOFOLLOW with modes[i], fchmod'ed when modes[i] & chmod_mask);
 *   sizes[i]: the catalog size (a blob of another size is not raw: the item is skipped).
 *   Per processed item the result holds either the blob's
 *   (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) -- the file exists, cloned with
 *   FICLONE (or empty) and stamped with mtime=atime=mtime_ns -- or an int: -1 for "blob
 *   not raw", else the errno that stopped the item. The loop stops after the first errno,
 *   so the list may be shorter than the input: the rest was not attempted.
 *
 * set_parent_death_signal(signum): prctl(PR_SET_PDEATHSIG) for forked workers (importing
 *   ctypes for this one call costs a worker ~15 ms of start-up).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOT_RAW (-1)

typedef struct {
    const char *blob;
    const char *name;
    unsigned int mode;
    long long size;
    int err; /* 0 done, NOT_RAW, or errno */
    struct stat st;
} item_t;

static void clone_one(int lib_fd, int dir_fd, item_t *it, unsigned int chmod_mask,
                      const struct timespec times[2]) {
    int src = openat(lib_fd, it->blob, O_RDONLY | O_CLOEXEC);
    if (src < 0) {
        it->err = errno;
        return;
    }
    if (fstat(src, &it->st) < 0) {
        it->err = errno;
        close(src);
        return;
    }
    if (!S_ISREG(it->st.st_mode) || (long long)it->st.st_size != it->size) {
        it->err = NOT_RAW;
        close(src);
        return;
    }
    int dst = openat(dir_fd, it->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                     it->mode & 07777);
    if (dst < 0) {
        it->err = errno;
        close(src);
        return;
    }
    int err = 0;
    if (it->size > 0 && ioctl(dst, FICLONE, src) < 0)
        err = errno;
    if (!err && (it->mode & chmod_mask) && fchmod(dst, it->mode & 07777) < 0)
        err = errno;
    if (!err && futimens(dst, times) < 0)
        err = errno;
    if (close(dst) < 0 && !err)
        err = errno;
    close(src);
    if (err)
        unlinkat(dir_fd, it->name, 0);
    it->err = err;
}

static int fill_items(item_t *items, Py_ssize_t n, PyObject *blobs, PyObject *names,
                      PyObject *modes, PyObject *sizes, PyObject *keep) {
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(blobs, i));
        if (b == NULL)
            return -1;
        PyList_SET_ITEM(keep, 2 * i, b);
        PyObject *nm = PyUnicode_EncodeFSDefault(PyList_GET_ITEM(names, i));
        if (nm == NULL)
            return -1;
        PyList_SET_ITEM(keep, 2 * i + 1, nm);
        items[i].blob = PyBytes_AS_STRING(b);
        items[i].name = PyBytes_AS_STRING(nm);
        items[i].mode = (unsigned int)PyLong_AsUnsignedLong(PyList_GET_ITEM(modes, i));
        items[i].size = PyLong_AsLongLong(PyList_GET_ITEM(sizes, i));
        items[i].err = 0;
        if (PyErr_Occurred())
            return -1;
    }
    return 0;
}

static PyObject *set_parent_death_signal(PyObject *Py_UNUSED(self), PyObject *arg) {
    long signum = PyLong_AsLong(arg);
    if (signum == -1 && PyErr_Occurred())
        return NULL;
    if (prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *clone_files(PyObject *Py_UNUSED(self), PyObject *args) {
    int lib_fd, dir_fd;
    PyObject *blobs, *names, *modes, *sizes;
    unsigned int chmod_mask;
    long long mtime_ns;
    if (!PyArg_ParseTuple(args, "iiO!O!O!O!IL", &lib_fd, &dir_fd, &PyList_Type, &blobs, &PyList_Type,
                          &names, &PyList_Type, &modes, &PyList_Type, &sizes, &chmod_mask, &mtime_ns))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(blobs);
    if (PyList_GET_SIZE(names) != n || PyList_GET_SIZE(modes) != n || PyList_GET_SIZE(sizes) != n) {
        PyErr_SetString(PyExc_ValueError, "clone_files: lists of different lengths");
        return NULL;
    }
    item_t *items = PyMem_Calloc(n ? (size_t)n : 1, sizeof(item_t));
    PyObject *keep = PyList_New(2 * n); /* owns the encoded paths while the GIL is released */
    if (items == NULL || keep == NULL) {
        PyMem_Free(items);
        Py_XDECREF(keep);
        return PyErr_NoMemory();
    }
    if (fill_items(items, n, blobs, names, modes, sizes, keep) < 0) {
        PyMem_Free(items);
        Py_DECREF(keep);
        return NULL;
    }
    struct timespec times[2];
    times[0].tv_sec = times[1].tv_sec = (time_t)(mtime_ns / 1000000000LL);
    times[0].tv_nsec = times[1].tv_nsec = (long)(mtime_ns % 1000000000LL);
    Py_ssize_t done = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; done < n; done++) {
        clone_one(lib_fd, dir_fd, &items[done], chmod_mask, times);
        if (items[done].err > 0) {
            done++;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    PyObject *out = PyList_New(done);
    for (Py_ssize_t i = 0; out != NULL && i < done; i++) {
        item_t *it = &items[i];
        PyObject *r;
        if (it->err)
            r = PyLong_FromLong(it->err);
        else
            r = Py_BuildValue("(KKLLL)", (unsigned long long)it->st.st_dev,
                              (unsigned long long)it->st.st_ino, (long long)it->st.st_size,
                              (long long)it->st.st_mtim.tv_sec * 1000000000LL + it->st.st_mtim.tv_nsec,
                              (long long)it->st.st_ctim.tv_sec * 1000000000LL + it->st.st_ctim.tv_nsec);
        if (r == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, r);
    }
    PyMem_Free(items);
    return out;
}

static PyMethodDef methods[] = {
    {"clone_files", clone_files, METH_VARARGS,
     "Create and reflink a batch of files from raw blobs (see the module source)."},
    {"set_parent_death_signal", set_parent_death_signal, METH_O,
     "prctl(PR_SET_PDEATHSIG, signum): the signal this process gets when its parent dies."},
    {NULL, NULL, 0, NULL},
};
#else
static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "holofs._native", "Native per-file loops (Linux).", -1, methods,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
