"""The dense item × item Gram matrix XᵀX of a binary user × item matrix, for
EASE and ItemKNN.

Built a block of rows at a time (``recsys.memory_budgets.block_rows``): the
whole sparse product would take 8 bytes an entry on a dense-ish catalogue,
twice the dense float32 result, and converting it would add another n² copy.
The peak is the n × n result plus one block, as ``memory_budgets.gram_bytes``
says. Entries are co-occurrence counts, exact in float32 below 2²⁴ users.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.memory_budgets import block_rows


def dense_gram(matrix: sp.csr_matrix, dtype: Any = np.float32) -> np.ndarray:
    """XᵀX as a C-contiguous n_items × n_items array of ``dtype``."""
    matrix = sp.csr_matrix(matrix)
    n = matrix.shape[1]
    gram = np.empty((n, n), dtype)
    transposed = matrix.T.tocsr()
    step = block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = transposed[start:stop] @ matrix
        if block.dtype == gram.dtype:
            block.toarray(out=gram[start:stop])
        else:
            gram[start:stop] = block.toarray()
        del block
    return gram
