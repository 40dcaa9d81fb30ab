# Checked data pointers of the NumPy arrays the kernels take as arguments (a typed memoryview
# costs some 0.2 us per argument to set up, more than the work of a small per-step kernel).
cimport numpy as cnp


cdef inline void* array_data(cnp.ndarray a, int typenum, int ndim, bint out, str func,
                             str name) except NULL:
    """Data pointer of ``a`` once it is a C-contiguous, aligned, native-order array of
    ``typenum`` with ``ndim`` dimensions (writable when ``out``): what a typed memoryview
    accepts. Otherwise ``ValueError`` naming the kernel ``func`` (if not None) and the
    argument ``name``."""
    if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != ndim
            or not cnp.PyArray_ISCARRAY_RO(a) or not cnp.PyArray_ISNOTSWAPPED(a)
            or (out and not cnp.PyArray_ISWRITEABLE(a))):
        raise ValueError(f"{'' if func is None else func + ': '}{name}: needs a "
                         f"C-contiguous{' writable' if out else ''} {ndim}-d array of "
                         f"{cnp.PyArray_DescrFromType(typenum)}, got "
                         f"{'' if a.flags.c_contiguous else 'non-contiguous '}"
                         f"{'' if a.flags.writeable or not out else 'read-only '}"
                         f"{a.ndim}-d {a.dtype}")
    return cnp.PyArray_DATA(a)
