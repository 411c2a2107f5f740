// Python module entry for fastpapers._C. Importing it loads the shared library, whose static
// TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL blocks register every op with the dispatcher.
// The plain C API keeps pybind11 (and torch/extension.h) out of the build: each translation
// unit compiles against ATen and torch/library.h only.
#include <Python.h>

static PyModuleDef fastpapers_c_module = {
    PyModuleDef_HEAD_INIT, "_C", "fastpapers compiled operators", -1, nullptr,
};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&fastpapers_c_module);
  if (m == nullptr) return nullptr;
#ifdef WITH_CUDA
  PyModule_AddObject(m, "with_cuda", Py_True);
  Py_INCREF(Py_True);
#else
  PyModule_AddObject(m, "with_cuda", Py_False);
  Py_INCREF(Py_False);
#endif
  return m;
}
