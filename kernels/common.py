"""Small @triton.jit helpers shared by the kernel families (quantize, matmul)."""

import triton
import triton.language as tl


@triton.jit
def _cast_rne(v, dtype: tl.constexpr):
    """float32 v -> dtype, rounding to nearest even. bfloat16 is rounded by hand on the
    float32 bits (add 0x7fff plus the lowest kept bit, drop 16 bits; NaN kept quiet): the
    same result as the GPU's cvt.rn.bf16.f32, and Triton's interpreter would truncate."""
    if dtype == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = tl.where(v != v, 0x7FC00000, bits + (0x7FFF + ((bits >> 16) & 1)))  # noqa: PLR0124 (the NaN test)
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)
