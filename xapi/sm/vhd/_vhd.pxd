# C-level entry points of the compiled VHD core (xapi/sm/vhd/_vhd.pyx), for other Cython
# modules that want to skip the Python call: `from xapi.sm.vhd._vhd cimport c_checksum`.
# They do no bounds checks: the caller passes valid pointers and lengths.
from libc.stdint cimport uint32_t

# one's complement of the byte sum of p[0:n] (the VHD footer/header checksum, with the
# checksum field zeroed by the caller)
cdef uint32_t c_checksum(const unsigned char* p, Py_ssize_t n) noexcept nogil
# bit n of an MSB-first sector bitmap
cdef bint c_bitmap_test(const unsigned char* bm, Py_ssize_t n) noexcept nogil
# set bits in bm[0:nbits]
cdef Py_ssize_t c_bitmap_count(const unsigned char* bm, Py_ssize_t nbits) noexcept nogil
# sets bits [start, start + count); returns how many were clear
cdef Py_ssize_t c_bitmap_set(unsigned char* bm, Py_ssize_t start, Py_ssize_t count) noexcept nogil
# p[0:n] all zero
cdef bint c_is_zero(const unsigned char* p, Py_ssize_t n) noexcept nogil
