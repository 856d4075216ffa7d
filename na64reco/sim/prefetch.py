"""A software prefetch for numba kernels: ``prefetch(a, i)`` asks the CPU to bring the cache line
of ``a[i]`` towards the core (LLVM's ``llvm.prefetch``, read, all cache levels).

It has no effect on any result (no bounds check is needed: a prefetch of an address outside the
array is ignored by the CPU, though the callers keep ``i`` inside).  Kernels that read arrays
through a permutation (e.g. the APV clusters sorted by (event, plane), read from arrays filled
plane by plane) stall on a cache miss per line; prefetching a few iterations ahead hides that
latency (issue 11, eighth pass).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, idx):
    """Prefetch the cache line of ``arr[idx]`` (1-d array, integer index); returns nothing."""
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(idx, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aty, ity = signature.args
        a = context.make_array(aty)(context, builder, args[0])
        i = context.cast(builder, args[1], ity, types.intp)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # (address, read, locality 3: keep in all levels, data cache)
        builder.call(fn, [builder.bitcast(builder.gep(a.data, [i]), i8p), ir.Constant(i32, 0), ir.Constant(i32, 3),
                          ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen
