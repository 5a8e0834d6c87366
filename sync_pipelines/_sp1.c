/*
 * Native fast path for the sp1 fingerprints of sync_pipelines.diff (optional: the package works
 * without it, through the pure-Python path, and the tests check that both give the same digests).
 *
 * sp1_digests(columns, fixed) -> bytes
 *
 *   columns: k sequences (lists, or contiguous numpy object arrays) of n values each; a value is
 *            a str or None (the missing marker "\x00"). Anything else raises TypeError, and the
 *            caller takes the pure-Python path, which knows pandas' other missing markers.
 *   fixed:   k bytes objects: fixed[0] is "sp1" + the first column's head, fixed[j] the head of
 *            column j ("\x1e" name "\x1f", UTF-8).
 *
 * Returns n * 32 bytes: for each row, SHA-256 of fixed[0] v0 fixed[1] v1 ... fixed[k-1] v(k-1),
 * the values in UTF-8: exactly the text the module docstring of sync_pipelines.diff documents.
 * A str that cannot be encoded (a lone surrogate) raises UnicodeEncodeError, as str.encode does.
 *
 * The row is laid out in one reusable buffer and hashed with OpenSSL (the library Python's own
 * hashlib uses). Its low-level SHA256_Init/Update/Final take about 0.2 us a row; the EVP interface
 * (and the one-shot SHA256(), which goes through it) spends about 0.3 us more a row on setting up
 * each digest, which is more than hashing a 300-byte row costs. OpenSSL 3 marks the low-level
 * functions deprecated; where a build leaves them out (OPENSSL_NO_DEPRECATED_3_0), EVP is used.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

#if !defined(OPENSSL_NO_DEPRECATED_3_0)
#define SP1_LOW_LEVEL_SHA256 1
#endif

typedef struct {
    PyObject *owner;   /* the list (borrowed) or the buffer's exporter (in view) */
    Py_buffer view;    /* used when the column is not a list */
    int is_view;
    PyObject **items;  /* list items, or view.buf */
    Py_ssize_t stride; /* in items */
    Py_ssize_t len;
} column_t;

static int open_column(PyObject *obj, column_t *col) {
    memset(col, 0, sizeof(*col));
    if (PyList_Check(obj)) {
        col->owner = obj;
        col->items = PySequence_Fast_ITEMS(obj);
        col->stride = 1;
        col->len = PyList_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_GetBuffer(obj, &col->view, PyBUF_RECORDS_RO) < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "a column must be a list or a numpy object array");
        return -1;
    }
    col->is_view = 1;
    if (col->view.ndim != 1 || col->view.format == NULL || strcmp(col->view.format, "O") != 0 ||
        col->view.itemsize != (Py_ssize_t)sizeof(PyObject *) ||
        col->view.strides[0] % (Py_ssize_t)sizeof(PyObject *) != 0) {
        PyBuffer_Release(&col->view);
        col->is_view = 0;
        PyErr_SetString(PyExc_TypeError, "a column array must be one-dimensional, of objects");
        return -1;
    }
    col->items = (PyObject **)col->view.buf;
    col->stride = col->view.strides[0] / (Py_ssize_t)sizeof(PyObject *);
    col->len = col->view.shape[0];
    return 0;
}

static void close_column(column_t *col) {
    if (col->is_view) {
        PyBuffer_Release(&col->view);
        col->is_view = 0;
    }
}

/* Make room for `extra` more bytes at `*used` in the buffer. */
static int reserve(char **buf, Py_ssize_t *cap, Py_ssize_t used, Py_ssize_t extra) {
    if (used + extra <= *cap) return 0;
    Py_ssize_t want = *cap * 2;
    if (want < used + extra) want = used + extra + 256;
    char *grown = PyMem_Realloc(*buf, (size_t)want);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = grown;
    *cap = want;
    return 0;
}

static PyObject *sp1_digests(PyObject *self, PyObject *args) {
    PyObject *columns_arg, *fixed_arg;
    if (!PyArg_ParseTuple(args, "OO", &columns_arg, &fixed_arg)) return NULL;

    PyObject *columns = PySequence_Fast(columns_arg, "columns must be a sequence");
    if (columns == NULL) return NULL;
    PyObject *fixed = PySequence_Fast(fixed_arg, "fixed must be a sequence");
    if (fixed == NULL) {
        Py_DECREF(columns);
        return NULL;
    }
    Py_ssize_t k = PySequence_Fast_GET_SIZE(columns);
    PyObject *result = NULL;
    column_t *cols = NULL;
    char *buf = NULL;
    Py_ssize_t opened = 0, n = 0, cap = 1024;
    EVP_MD_CTX *ctx = NULL;
    const EVP_MD *sha256 = EVP_sha256();

    if (k == 0 || PySequence_Fast_GET_SIZE(fixed) != k) {
        PyErr_SetString(PyExc_ValueError, "need one fixed piece per column, and at least one column");
        goto done;
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        if (!PyBytes_Check(PySequence_Fast_GET_ITEM(fixed, j))) {
            PyErr_SetString(PyExc_TypeError, "fixed pieces must be bytes");
            goto done;
        }
    }
    cols = PyMem_Calloc((size_t)k, sizeof(column_t));
    if (cols == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; opened < k; opened++) {
        if (open_column(PySequence_Fast_GET_ITEM(columns, opened), &cols[opened]) < 0) goto done;
        if (opened == 0) n = cols[0].len;
        else if (cols[opened].len != n) {
            opened++;
            PyErr_SetString(PyExc_ValueError, "columns differ in length");
            goto done;
        }
    }
    result = PyBytes_FromStringAndSize(NULL, n * SHA256_DIGEST_LENGTH);
    if (result == NULL) goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    buf = PyMem_Malloc((size_t)cap);
    ctx = EVP_MD_CTX_new();
    if (buf == NULL || ctx == NULL) {
        PyErr_NoMemory();
        Py_CLEAR(result);
        goto done;
    }

    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t used = 0;
        for (Py_ssize_t j = 0; j < k; j++) {
            PyObject *head = PySequence_Fast_GET_ITEM(fixed, j);
            Py_ssize_t hlen = PyBytes_GET_SIZE(head);
            if (reserve(&buf, &cap, used, hlen) < 0) goto fail;
            memcpy(buf + used, PyBytes_AS_STRING(head), (size_t)hlen);
            used += hlen;

            PyObject *v = cols[j].items[i * cols[j].stride];
            if (v == Py_None) {
                if (reserve(&buf, &cap, used, 1) < 0) goto fail;
                buf[used++] = '\0';
            } else if (PyUnicode_Check(v)) {
                if (PyUnicode_IS_COMPACT_ASCII(v)) {
                    Py_ssize_t vlen = PyUnicode_GET_LENGTH(v);
                    if (reserve(&buf, &cap, used, vlen) < 0) goto fail;
                    memcpy(buf + used, PyUnicode_DATA(v), (size_t)vlen);
                    used += vlen;
                } else {
                    PyObject *encoded = PyUnicode_AsUTF8String(v);
                    if (encoded == NULL) goto fail;
                    Py_ssize_t vlen = PyBytes_GET_SIZE(encoded);
                    if (reserve(&buf, &cap, used, vlen) < 0) {
                        Py_DECREF(encoded);
                        goto fail;
                    }
                    memcpy(buf + used, PyBytes_AS_STRING(encoded), (size_t)vlen);
                    used += vlen;
                    Py_DECREF(encoded);
                }
            } else {
                PyErr_Format(PyExc_TypeError, "value of type %.100s: only str and None are hashed here",
                             Py_TYPE(v)->tp_name);
                goto fail;
            }
        }
#ifdef SP1_LOW_LEVEL_SHA256
        SHA256_CTX sctx;
        if (SHA256_Init(&sctx) != 1 || SHA256_Update(&sctx, buf, (size_t)used) != 1 ||
            SHA256_Final(out + i * SHA256_DIGEST_LENGTH, &sctx) != 1) {
#else
        if (EVP_DigestInit_ex(ctx, sha256, NULL) != 1 || EVP_DigestUpdate(ctx, buf, (size_t)used) != 1 ||
            EVP_DigestFinal_ex(ctx, out + i * SHA256_DIGEST_LENGTH, NULL) != 1) {
#endif
            PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not compute a SHA-256 digest");
            goto fail;
        }
    }
    goto done;

fail:
    Py_CLEAR(result);
done:
    for (Py_ssize_t j = 0; j < opened; j++) close_column(&cols[j]);
    PyMem_Free(cols);
    PyMem_Free(buf);
    EVP_MD_CTX_free(ctx);
    Py_DECREF(columns);
    Py_DECREF(fixed);
    return result;
}

static PyMethodDef methods[] = {
    {"sp1_digests", sp1_digests, METH_VARARGS,
     "sp1_digests(columns, fixed) -> bytes: the SHA-256 digest of every row's sp1 text, end to end."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_sp1", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sp1(void) { return PyModule_Create(&module); }
