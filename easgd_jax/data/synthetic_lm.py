"""``synthetic_lm``: byte-level text from a seeded hidden Markov model, with the exact
Bayes-optimal next-token cross-entropy of its test split.

The source (Rabiner 1989, "A tutorial on hidden Markov models", Proc. IEEE 77(2)): hidden
states ``s_t`` in ``{0..S-1}``, bytes ``x_t`` in ``{0..V-1}``,

    s_0 ~ pi,   s_{t+1} | s_t ~ A[s_t, :],   x_t | s_t ~ B[s_t, :]

with ``pi`` the stationary distribution of ``A`` (every window is a stretch of one endless
text). ``make_source`` draws a sparse random one from a seed: each state moves to
``branching`` successors (Dirichlet weights) mixed with a small uniform jump ``mixing`` (so
the chain is ergodic) and emits one of ``emission_support`` printable bytes. Emissions of
different states overlap, so a byte does not reveal the state: the best prediction of the
next byte needs the whole past (the belief over states), which gives the text its
long-range structure.

Each example is an independent window of ``context + 1`` bytes ``w_0..w_context``; the model
reads ``x = w[:-1]`` and predicts ``y = w[1:]``. The best any model can do on the test split
is the Bayes predictor ``p(w_t | w_<t)``, computed exactly by the scaled forward algorithm
(Rabiner 1989, eqs. 19-20 and 91-93):

    alpha_0 = pi;  p(w_t | w_<t) = sum_s alpha_t(s) B[s, w_t];
    alpha_{t+1} = (alpha_t * B[:, w_t]) A / p(w_t | w_<t)

and ``optimal_loss = -mean_{windows, t=1..context} log p(w_t | w_<t)`` (nats per token), in
float64. Every LM evaluation reports it beside the model's ``test_loss`` and their gap.

Generation is vectorised over windows (one numpy step per position) and cached per
arguments (seed included): a few million bytes take about a second.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.sparse

from easgd_jax.data.dataset import Dataset

VOCAB_SIZE = 256  # bytes
PRINTABLE = np.arange(32, 127)  # the bytes the generated text uses (printable ASCII)


@dataclasses.dataclass(frozen=True, eq=False)
class HiddenMarkovSource:
    """A hidden Markov model ``(pi, A, B)`` over ``B.shape[1]`` symbols (float64 arrays).

    ``transition`` may be a dense array or a scipy sparse matrix, optionally with a
    uniform jump: the chain's matrix is ``(1 - mixing) * transition + mixing / S``.
    """

    initial: np.ndarray  # pi [S]
    transition: np.ndarray | scipy.sparse.csr_matrix  # [S, S], rows sum to 1
    emission: np.ndarray  # B [S, V], rows sum to 1
    mixing: float = 0.0

    @property
    def num_states(self) -> int:
        return len(self.initial)

    @property
    def vocab_size(self) -> int:
        return self.emission.shape[1]

    def dense_transition(self) -> np.ndarray:
        """The chain's transition matrix ``[S, S]``, uniform jump included."""
        a = self.transition.toarray() if scipy.sparse.issparse(self.transition) else self.transition
        return (1.0 - self.mixing) * np.asarray(a, np.float64) + self.mixing / self.num_states

    def _step(self, belief: np.ndarray) -> np.ndarray:
        """``belief @ A`` for beliefs ``[n, S]``, the sparse part kept sparse."""
        out = (1.0 - self.mixing) * np.asarray(self.transition.T @ belief.T).T
        if self.mixing:
            out += self.mixing / self.num_states * belief.sum(axis=1, keepdims=True)
        return out

    def sample(self, num_windows: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """``num_windows`` independent sequences of ``length`` symbols (uint8 when V <= 256),
        vectorised over the windows: one draw per position by inverse CDF over each row's
        nonzero entries (the uniform jump drawn apart, with probability ``mixing``)."""
        dtype = np.uint8 if self.vocab_size <= 256 else np.int32
        a_cols, a_cdf = _row_cdfs(self.transition)
        b_cols, b_cdf = _row_cdfs(self.emission)
        state = _draw(np.cumsum(self.initial)[None, :], rng.random(num_windows))
        out = np.empty((num_windows, length), dtype)
        for t in range(length):
            out[:, t] = b_cols[state, _draw(b_cdf[state], rng.random(num_windows))]
            if t + 1 < length:
                step = a_cols[state, _draw(a_cdf[state], rng.random(num_windows))]
                jump = rng.random(num_windows) < self.mixing
                state = np.where(jump, rng.integers(0, self.num_states, num_windows), step)
        return out

    def conditional_log_probs(self, sequences: np.ndarray) -> np.ndarray:
        """``log p(x_t | x_<t)`` ``[n, length]`` of every position of ``sequences`` ``[n,
        length]`` under this source, by the scaled forward algorithm, in float64."""
        sequences = np.asarray(sequences)
        n, length = sequences.shape
        belief = np.broadcast_to(self.initial, (n, self.num_states)).astype(np.float64)
        out = np.empty((n, length), np.float64)
        emission_t = np.ascontiguousarray(self.emission.T)  # [V, S]
        for t in range(length):
            joint = belief * emission_t[sequences[:, t]]  # alpha_t(s) B[s, x_t]
            p = joint.sum(axis=1)
            out[:, t] = np.log(p)
            belief = self._step(joint / p[:, None])
        return out

    def optimal_loss(self, windows: np.ndarray) -> float:
        """The Bayes-optimal next-token cross-entropy (nats per token) of ``windows`` ``[n,
        context + 1]``: ``-mean log p(w_t | w_<t)`` over t = 1..context (w_0 is never
        predicted)."""
        return float(-np.mean(self.conditional_log_probs(windows)[:, 1:]))


def _row_cdfs(matrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nonzero columns and their cumulative weights, padded to the longest row
    (the padding repeats the row's last column with the row's total, never drawn)."""
    dense = matrix.toarray() if scipy.sparse.issparse(matrix) else np.asarray(matrix)
    width = max(1, int((dense > 0).sum(axis=1).max()))
    cols = np.zeros((len(dense), width), np.int64)
    cdf = np.ones((len(dense), width), np.float64)
    for r, row in enumerate(dense):
        nz = np.flatnonzero(row > 0)
        cols[r, :len(nz)], cols[r, len(nz):] = nz, nz[-1]
        cdf[r, :len(nz)] = np.cumsum(row[nz])
        cdf[r, len(nz):] = cdf[r, len(nz) - 1]
    return cols, cdf


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each row's CDF ``[n, k]`` by uniforms ``u [n]`` (clipped to k - 1
    against rounding in the last entry)."""
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1)


def stationary(transition: np.ndarray) -> np.ndarray:
    """The stationary distribution pi = pi A of an ergodic chain (the left eigenvector of
    eigenvalue 1, solved as a linear system)."""
    s = len(transition)
    system = np.vstack([transition.T - np.eye(s), np.ones((1, s))])
    rhs = np.zeros(s + 1)
    rhs[-1] = 1.0
    pi, *_ = np.linalg.lstsq(system, rhs, rcond=None)
    pi = np.maximum(pi, 0.0)
    return pi / pi.sum()


def make_source(seed: int = 0, num_states: int = 256, branching: int = 4,
                emission_support: int = 8, mixing: float = 0.02,
                concentration: float = 0.5) -> HiddenMarkovSource:
    """The seeded sparse HMM of the module docstring over bytes (V = 256): each state moves
    to ``branching`` random successors with Dirichlet(``concentration``) weights (then the
    uniform jump ``mixing``) and emits one of ``emission_support`` random printable bytes with
    Dirichlet(``concentration``) weights."""
    if not 1 <= branching <= num_states:
        raise ValueError(f"branching must be in [1, num_states={num_states}], got {branching}.")
    if not 1 <= emission_support <= len(PRINTABLE):
        raise ValueError(f"emission_support must be in [1, {len(PRINTABLE)}], got "
                         f"{emission_support}.")
    if not 0.0 < mixing <= 1.0:
        raise ValueError(f"mixing must be in (0, 1] (an ergodic chain), got {mixing}.")
    rng = np.random.default_rng([seed, 0x4D4D])
    rows = np.repeat(np.arange(num_states), branching)
    cols = np.concatenate([rng.choice(num_states, branching, replace=False)
                           for _ in range(num_states)])
    weights = rng.dirichlet(np.full(branching, concentration), size=num_states).reshape(-1)
    transition = scipy.sparse.csr_matrix((weights, (rows, cols)), shape=(num_states,) * 2)
    emission = np.zeros((num_states, VOCAB_SIZE))
    for s in range(num_states):
        support = rng.choice(PRINTABLE, emission_support, replace=False)
        emission[s, support] = rng.dirichlet(np.full(emission_support, concentration))
    source = HiddenMarkovSource(np.full(num_states, 1.0 / num_states), transition, emission,
                                mixing)
    return dataclasses.replace(source, initial=stationary(source.dense_transition()))


@functools.cache
def synthetic_lm(seed: int = 0, context: int = 64, num_states: int = 256,
                 train_tokens: int = 2_000_000, test_tokens: int = 32_768,
                 branching: int = 4, emission_support: int = 8) -> Dataset:
    """The ``synthetic_lm`` data set: windows of ``context + 1`` bytes from
    :func:`make_source` (``seed``), about ``train_tokens`` / ``test_tokens`` predicted tokens
    per split, inputs ``[n, context]`` and next-token labels ``[n, context]`` (int32), with
    ``optimal_test_loss`` the exact Bayes-optimal cross-entropy of the test split. Cached per
    arguments."""
    for name, value, low in (("context", context, 1), ("train_tokens", train_tokens, 1),
                             ("test_tokens", test_tokens, 1), ("num_states", num_states, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    source = make_source(seed, num_states, branching, emission_support)
    rng = np.random.default_rng([seed, 0x5445])
    train = source.sample(-(-train_tokens // context), context + 1, rng)
    test = source.sample(-(-test_tokens // context), context + 1, rng)
    return dataclasses.replace(
        token_dataset("synthetic_lm", train, test, VOCAB_SIZE,
                      optimal_test_loss=source.optimal_loss(test)),
        optimal_loss_of=functools.partial(windows_optimal_loss, source))


def windows_optimal_loss(source: HiddenMarkovSource, x: np.ndarray, y: np.ndarray) -> float:
    """``source``'s Bayes-optimal cross-entropy (nats per token) of the token windows ``x``,
    ``y`` of :func:`token_dataset` (``x = w[:, :-1]``, ``y = w[:, 1:]``): that of the
    windows ``w = [x[:, :1], y]`` they were cut from (a held-out validation split's optimum,
    :func:`easgd_jax.data.dataset.hold_out`)."""
    return source.optimal_loss(np.concatenate([x[:, :1], y], axis=1))


def token_dataset(name: str, train: np.ndarray, test: np.ndarray, vocab_size: int,
                  optimal_test_loss: float | None = None) -> Dataset:
    """A language-model Dataset from windows ``[n, context + 1]``: ``x = w[:, :-1]``, the
    labels ``y = w[:, 1:]`` (the next token of each position), int32."""
    def split(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        windows = np.asarray(windows, np.int32)
        return windows[:, :-1], windows[:, 1:]

    (tx, ty), (vx, vy) = split(train), split(test)
    return Dataset(name, tx, ty, vx, vy, num_classes=vocab_size,
                   optimal_test_loss=optimal_test_loss)
