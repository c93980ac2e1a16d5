"""The scale searches of ggml-quants.c, shared by the legacy importance-matrix paths and the K-quants.

ggml has one of each (its "Helper functions" section); so has refllm:

* :func:`make_qx_quants` — symmetric scale for levels ``-nmax … nmax-1`` (Q4_0/Q5_0 with an imatrix, Q3_K and Q6_K);
* :func:`make_q3_quants` — symmetric, with coordinate descent (the Q3_K reference);
* :func:`make_qkx2_quants` — scale and min for levels ``0 … nmax`` (Q2_K, Q4_K, Q5_K reference);
* :func:`make_qkx3_quants` — its importance-matrix variant (Q4_1/Q5_1 with an imatrix, Q2_K, Q4_K, Q5_K);
* :func:`make_qp_quants` — non-negative values (sub-block scales and mins) to ``0 … nmax`` (K-quants with an imatrix).

Every float operation is a float32 operation in C's order (see :mod:`refllm.quants.common`), so the levels and
scales are ggml's bit for bit.  Two reformulations keep every float operation of ggml but let LLVM vectorize
(verified bit-exact): :func:`make_qx_quants` evaluates its 19 independent trial scales together, one vector lane per
trial; :func:`make_qkx2_quants` / :func:`make_qkx3_quants` skip a trial whose levels equal the previous trial's (ggml
would compute the same error and reject it) and compute levels and errors in vector loops, leaving only the sums in
scalar loops in ggml's order.
"""

from __future__ import annotations

import numpy as np

from ..jit import kernel
from .common import nearest_int

GROUP_MAX_EPS = np.float32(1e-15)  # ggml-quants.c: below this max |x| a group counts as all zero
_QX_TRIALS = 19  # make_qx_quants: the first guess and is = -9 … 9 without 0

_ZERO = np.float32(0.0)
_ONE = np.float32(1.0)
_F_0_1 = np.float32(0.1)  # C's 0.1f


@kernel
def _qx_weight(x, i, rmse_type, qw):
    """The weight of element ``i`` in :func:`make_qx_quants`: ``qw[i]`` if given, else chosen by ``rmse_type``."""
    if qw.size > 0:
        return qw[i]
    if rmse_type == 1:
        return x[i] * x[i]
    if rmse_type == 2:
        return _ONE
    if rmse_type == 3:
        return abs(x[i])
    return np.sqrt(abs(x[i]))


@kernel
def _signed_absmax(n, x):
    """``(max, amax)``: the first element of largest ``|x|``, with its sign, and its magnitude (0, 0 if none is
    above 0) — ggml's ``if (ax > amax) { amax = ax; max = x[i]; }`` scan."""
    max_ = _ZERO
    amax = _ZERO
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            max_ = x[i]
    return max_, amax


@kernel
def make_qx_quants(n, nmax, x, L, rmse_type, qw):
    """Symmetric scale search (ggml ``make_qx_quants``): levels ``L[i]`` in ``[0, 2*nmax)``, ``x ≈ scale*(L-nmax)``.

    ``max`` is the first element of largest ``|x|``, with its sign (it maps to level 0).  Trial 0 is
    ``iscale = -nmax / max``, trials 1 … 18 are ``iscale = -(nmax + 0.1*is) / max`` for ``is = -9 … 9`` (no 0).
    Each trial gives levels ``l = clamp(nearest_int(iscale*x), -nmax, nmax-1)`` and the weighted sums
    ``sumlx = Σ (w*x)*l``, ``suml2 = Σ (w*l)*l``; trial 0 sets ``scale = sumlx / suml2`` and ``best = scale*sumlx``,
    and a later trial replaces them (and the levels) if ``suml2 > 0 and sumlx² > best*suml2``.  Weights: ``qw`` if
    non-empty, else by ``rmse_type`` (1: ``x²``, 2: 1, 3: ``|x|``, 4: ``sqrt|x|``).  Every caller in ggml passes
    ``rmse_type = 1``; ggml's ``rmse_type = 0`` (no search) and negative ("return early") variants have no caller and
    are not implemented.  Returns the scale (0 and all ``L = 0`` when ``max |x| < 1e-15``).

    The trials' scales do not depend on each other, so all 19 are summed in one pass over ``x`` (one lane per trial,
    which vectorizes); each trial's sums are still accumulated in ``i`` order, as in ggml, and the trials are then
    compared in ggml's order — the result is bit-identical to ggml's trial-after-trial loop.
    """
    max_, amax = _signed_absmax(n, x)
    if amax < GROUP_MAX_EPS:  # all zero
        for i in range(n):
            L[i] = 0
        return _ZERO
    work = np.zeros((3, _QX_TRIALS), np.float32)
    iscale = work[0]
    sumlx = work[1]
    suml2 = work[2]
    iscale[0] = np.float32(-nmax) / max_
    t = 1
    for is_ in range(-9, 10):
        if is_ != 0:
            iscale[t] = -(np.float32(nmax) + _F_0_1 * np.float32(is_)) / max_
            t += 1
    for i in range(n):
        w = _qx_weight(x, i, rmse_type, qw)
        wx = w * x[i]
        xi = x[i]
        for t in range(_QX_TRIALS):
            fl = np.float32(max(-nmax, min(nmax - 1, nearest_int(iscale[t] * xi))))
            sumlx[t] += wx * fl
            suml2[t] += (w * fl) * fl
    scale = sumlx[0] / suml2[0] if suml2[0] != 0 else _ZERO
    best = scale * sumlx[0]
    chosen = 0
    for t in range(1, _QX_TRIALS):
        if suml2[t] > 0 and sumlx[t] * sumlx[t] > best * suml2[t]:
            scale = sumlx[t] / suml2[t]
            best = scale * sumlx[t]
            chosen = t
    for i in range(n):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale[chosen] * x[i])))
    return scale


@kernel
def make_q3_quants(n, nmax, x, L, do_rmse):
    """Symmetric scale search of the Q3_K reference (ggml ``make_q3_quants``); levels ``L[i]`` in ``[0, 2*nmax)``.

    Start: ``L = clamp(nearest_int(-nmax/max * x), -nmax, nmax-1)``.  With ``do_rmse`` (the only use), up to 5
    passes of coordinate descent with weights ``x²``: each level is moved to ``nearest_int(x * suml2 / sumlx)``
    (leave-one-out sums) if that raises ``sumlx² / suml2``.  Returns ``sumlx / suml2`` (0 if ``suml2 <= 0``), or
    ``1/iscale`` without ``do_rmse``.  An all-zero group (``max |x| < 1e-15``) gets ``L = 0`` (not ``nmax``) and 0.
    """
    max_, amax = _signed_absmax(n, x)
    if amax < GROUP_MAX_EPS:  # all zero
        for i in range(n):
            L[i] = 0
        return _ZERO
    iscale = np.float32(-nmax) / max_
    if do_rmse:
        sumlx = _ZERO
        suml2 = _ZERO
        for i in range(n):
            l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
            L[i] = l
            w = x[i] * x[i]
            fl = np.float32(l)
            sumlx += (w * x[i]) * fl
            suml2 += (w * fl) * fl
        for itry in range(5):
            n_changed = 0
            for i in range(n):
                w = x[i] * x[i]
                fL = np.float32(L[i])
                slx = sumlx - (w * x[i]) * fL
                if slx > 0:
                    sl2 = suml2 - (w * fL) * fL
                    new_l = max(-nmax, min(nmax - 1, nearest_int((x[i] * sl2) / slx)))
                    if new_l != L[i]:
                        fn = np.float32(new_l)
                        slx += (w * x[i]) * fn
                        sl2 += (w * fn) * fn
                        if sl2 > 0 and (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
            if n_changed == 0:
                break
        for i in range(n):
            L[i] += nmax
        return sumlx / suml2 if suml2 > 0 else _ZERO
    for i in range(n):
        L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
    return _ONE / iscale


@kernel
def _qkx_levels(n, nmax, x, min_, iscale, L, fl):
    """``L[i] = clamp(nearest_int(iscale*(x[i] - min_)), 0, nmax)``, ``fl[i] = float(L[i])``; returns how many
    levels differ from the ones ``L`` held before."""
    changed = 0
    for i in range(n):
        l = max(0, min(nmax, nearest_int(iscale * (x[i] - min_))))
        changed += l != L[i]
        L[i] = l
        fl[i] = np.float32(l)
    return changed


@kernel
def _qkx_error(n, x, weights, fl, scale, min_, use_mad, tmp):
    """``Σ w*|scale*l + min - x|`` (``use_mad``) or ``Σ w*(scale*l + min - x)²``, summed in ``i`` order."""
    for i in range(n):
        diff = (scale * fl[i] + min_) - x[i]
        tmp[i] = weights[i] * (abs(diff) if use_mad else diff * diff)
    error = _ZERO
    for i in range(n):
        error += tmp[i]
    return error


@kernel
def _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, min_, max_, sum_w, sum_x):
    """The search shared by :func:`make_qkx2_quants` and :func:`make_qkx3_quants` once min, max and the weight
    sums are known (``min < max``).  Returns ``(scale, the_min)``.

    The trials run one after the other as in ggml (an accepted trial's ``min`` is used by the following ones).
    Two things make it faster without changing a bit: the per-element work is done in loops that vectorize, with only
    the sums left as scalar loops in ggml's order; and a trial whose levels equal the previous trial's is skipped —
    its sums and error would be the previous trial's (they do not involve ``min``), so ggml's strict ``<`` would
    reject it again.
    """
    work = np.empty((2, n), np.float32)
    fl = work[0]
    tmp = work[1]
    iscale = np.float32(nmax) / (max_ - min_)
    scale = _ONE / iscale
    _qkx_levels(n, nmax, x, min_, iscale, L, fl)
    best_error = _qkx_error(n, x, weights, fl, scale, min_, use_mad, tmp)
    if nstep < 1:
        return scale, -min_
    for is_ in range(nstep + 1):
        iscale = ((rmin + rdelta * np.float32(is_)) + np.float32(nmax)) / (max_ - min_)
        if _qkx_levels(n, nmax, x, min_, iscale, Laux, fl) == 0 and is_ > 0:
            continue  # the previous trial's levels: same sums and error, rejected again
        sum_l = _ZERO
        sum_l2 = _ZERO
        sum_xl = _ZERO
        for i in range(n):
            wl = weights[i] * fl[i]
            sum_l += wl
            sum_l2 += wl * fl[i]
            sum_xl += wl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = _ZERO
                this_scale = sum_xl / sum_l2
            cur_error = _qkx_error(n, x, weights, fl, this_scale, this_min, use_mad, tmp)
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                min_ = this_min
    return scale, -min_


@kernel
def _qkx_start(n, x, weights):
    """The first pass of :func:`make_qkx2_quants` and :func:`make_qkx3_quants`: ``(min(0, min x), max x, Σw, Σw*x)``,
    the sums in ``i`` order as in ggml."""
    min_ = x[0]
    max_ = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < min_:
            min_ = x[i]
        if x[i] > max_:
            max_ = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if min_ > 0:
        min_ = _ZERO
    return min_, max_, sum_w, sum_x


@kernel
def make_qkx2_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """Asymmetric scale + min search (ggml ``make_qkx2_quants``): ``x ≈ scale*L - the_min``, ``L`` in ``[0, nmax]``.

    ``min = min(0, min x)``.  First guess ``iscale = nmax / (max - min)``, ``scale = 1/iscale``; then for
    ``is = 0 … nstep`` (inclusive) ``iscale = (rmin + rdelta*is + nmax) / (max - min)`` gives levels
    ``L = clamp(nearest_int(iscale*(x - min)), 0, nmax)`` and, if ``D = Σw·Σw*l² - (Σw*l)² > 0``, the weighted
    least-squares ``scale`` and ``min`` for them (``min`` forced to ≤ 0, then ``scale = Σw*l*x / Σw*l²``).  A trial
    replaces the current levels, scale and min if its weighted error (``|err|`` if ``use_mad`` else ``err²``) is
    smaller (strict ``<``); the new ``min`` is used by the following trials.  Returns ``(scale, the_min)`` with
    ``the_min = -min >= 0``; a constant group (``max == min``) gives ``L = 0``, scale 0.
    """
    min_, max_, sum_w, sum_x = _qkx_start(n, x, weights)
    if max_ == min_:
        for i in range(n):
            L[i] = 0
        return _ZERO, -min_
    return _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, min_, max_, sum_w, sum_x)


@kernel
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """The importance-matrix variant of :func:`make_qkx2_quants` (ggml ``make_qkx3_quants``).

    The same search; the differences are that empty ``weights`` means ``w = x²`` (no caller in ggml's chunk path
    does that) and that the degenerate group is ``max <= min`` (after ``min = min(0, min x)``).
    """
    if weights.size == 0:
        weights = np.empty(n, np.float32)
        for i in range(n):
            weights[i] = x[i] * x[i]
    min_, max_, sum_w, sum_x = _qkx_start(n, x, weights)
    if max_ <= min_:
        for i in range(n):
            L[i] = 0
        return _ZERO, -min_
    return _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, min_, max_, sum_w, sum_x)


@kernel
def make_qp_quants(n, nmax, x, L, quant_weights):
    """Quantize non-negative values (sub-block scales or mins) to ``[0, nmax]`` (ggml ``make_qp_quants``).

    ``max = max(0, x)``; first guess ``iscale = nmax/max``, then ``iscale = (0.1*is + nmax)/max`` for
    ``is = -4 … 4`` by weighted squared error (strict ``<``); then up to 5 coordinate-descent passes as in
    :func:`make_q3_quants`.  Returns ``sumlx / suml2`` (0 if ``suml2 <= 0``; 0 and ``L = 0`` if ``max < 1e-15``).

    ``L`` is C's ``uint8_t`` array: stores wrap modulo 256 (a negative level, possible only for a negative
    input, is read back as ``l + 256``, exactly as ggml does).
    """
    max_ = _ZERO
    for i in range(n):
        max_ = max_ if max_ > x[i] else x[i]
    if max_ < GROUP_MAX_EPS:  # all zero
        for i in range(n):
            L[i] = 0
        return _ZERO
    iscale = np.float32(nmax) / max_
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = _ONE / iscale
    best_mse = _ZERO
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        w = quant_weights[i]
        best_mse += (w * diff) * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (_F_0_1 * np.float32(is_) + np.float32(nmax)) / max_
        scale_is = _ONE / iscale_is
        mse = _ZERO
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * np.float32(l)
            w = quant_weights[i]
            mse += (w * diff) * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = _ZERO
    suml2 = _ZERO
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = quant_weights[i]
        fl = np.float32(l)
        sumlx += (w * x[i]) * fl
        suml2 += (w * fl) * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            fL = np.float32(L[i])
            slx = sumlx - (w * x[i]) * fL
            sl2 = suml2 - (w * fL) * fL
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int((x[i] * sl2) / slx))
                if new_l != L[i]:
                    fn = np.float32(new_l)
                    slx += (w * x[i]) * fn
                    sl2 += (w * fn) * fn
                    if (slx * slx) * suml2 > (sumlx * sumlx) * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else _ZERO
