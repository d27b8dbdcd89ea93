# C-level entry points of the compiled XenAPI wire codec (xapi/_rpc.pyx), for other
# Cython modules that want to skip the Python call: `from xapi._rpc cimport c_dumps_success`.
# They behave exactly like the Python functions of the same name without the `c_`.

cdef tuple c_loads(object data)
cdef bytes c_dumps_success(object value, bint ints_as_strings)
cdef bytes c_dumps_failure(object description)
