"""Truncated SVD of a sum of low-rank products, two ways: the fast factored path and the dense reference.

W = [c_1 B_1 ... c_K B_K] [A_1; ...; A_K] has rank <= R = sum r_k. The factored path never forms the
d×n matrix: QR of both stacks, then an SVD of the small R×R core (cost O((d+n)R² + R³)). The dense
path forms W and calls ``torch.linalg.svd`` (cost O(dn·min(d,n))); FlexLoRA's ``svd="dense"`` option,
and the fallback when the factored path cannot give ``rank`` orthonormal directions. (The tests'
obviously-correct reference is in ``tests/federated_reference.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor



def linalg_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to factorise in: float16/bfloat16 have no QR/SVD/solve kernels, so use float32."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def dense_truncated_svd(w: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """(U_r, S_r, Vh_r) of the dense ``w``; zero-padded when rank > min(d, n). Returned in w's dtype."""
    u, s, vh = torch.linalg.svd(w.to(linalg_dtype(w.dtype)), full_matrices=False)
    u, s, vh = (x.to(w.dtype) for x in (u, s, vh))
    return _pad(u[:, :rank], s[:rank], vh[:rank], rank)


def factored_truncated_svd(
    bs: Sequence[Tensor], as_: Sequence[Tensor], coefficients: Sequence[float], rank: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(U_r, S_r, Vh_r) of sum_k c_k B_k A_k without forming it (falls back to dense when needed)."""
    dtype = bs[0].dtype
    work = linalg_dtype(dtype)
    b_stack = torch.cat([b.to(work) * c for b, c in zip(bs, coefficients)], dim=1)  # d×R
    a_stack = torch.cat([a.to(work) for a in as_], dim=0)  # R×n
    d, big_r = b_stack.shape
    n = a_stack.shape[1]
    if big_r < min(rank, d, n):
        # Fewer directions than asked: only the dense SVD completes the orthonormal bases.
        u, s, vh = dense_truncated_svd(b_stack @ a_stack, rank)
        return u.to(dtype), s.to(dtype), vh.to(dtype)
    q_b, r_b = torch.linalg.qr(b_stack)  # d×m1, m1×R
    q_a, r_a = torch.linalg.qr(a_stack.T)  # n×m2, m2×R
    u_c, s, vh_c = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)
    u = q_b @ u_c[:, :rank]
    vh = vh_c[:rank] @ q_a.T
    return _pad(u.to(dtype), s[:rank].to(dtype), vh.to(dtype), rank)


def _pad(u: Tensor, s: Tensor, vh: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor]:
    """Zero-pad to ``rank`` components when the matrix is smaller than the rank (r > min(d, n))."""
    k = s.shape[0]
    if k == rank:
        return u, s, vh
    u = torch.cat([u, u.new_zeros(u.shape[0], rank - k)], dim=1)
    s = torch.cat([s, s.new_zeros(rank - k)])
    vh = torch.cat([vh, vh.new_zeros(rank - k, vh.shape[1])], dim=0)
    return u, s, vh
