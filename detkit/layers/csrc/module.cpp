// Python entry point of detkit._C. Importing the module loads this shared
// library, whose static initialisers register the torch.ops.detkit operators.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "detkit's compiled operators, registered as torch.ops.detkit.*",
      -1,
      nullptr,
  };
  return PyModule_Create(&module);
}
