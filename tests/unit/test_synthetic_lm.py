"""synthetic_lm: the hidden Markov source, its sampler, and the exact optimum (forward
algorithm) checked against brute force over every sequence of a tiny source; a model trained
long on it approaches the optimum from above."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse

from easgd_jax import data, models
from easgd_jax.data.synthetic_lm import (
    PRINTABLE,
    HiddenMarkovSource,
    make_source,
    stationary,
    synthetic_lm,
    token_dataset,
)
from easgd_jax.training.common import init_params, make_evaluator


def tiny_source() -> HiddenMarkovSource:
    """3 states over 3 symbols, a sparse transition with a uniform jump (the form
    make_source builds), emissions that overlap (a symbol does not reveal the state)."""
    transition = scipy.sparse.csr_matrix(np.array([[0.0, 0.9, 0.1],
                                                   [0.0, 0.2, 0.8],
                                                   [0.7, 0.0, 0.3]]))
    emission = np.array([[0.8, 0.2, 0.0],
                         [0.1, 0.6, 0.3],
                         [0.0, 0.3, 0.7]])
    source = HiddenMarkovSource(np.full(3, 1 / 3), transition, emission, mixing=0.1)
    return HiddenMarkovSource(stationary(source.dense_transition()), transition, emission, 0.1)


def brute_force_probability(source: HiddenMarkovSource, seq: tuple[int, ...]) -> float:
    """p(x_0..x_{n-1}) as the sum over every hidden path (no recursion)."""
    a, b, pi = source.dense_transition(), source.emission, source.initial
    total = 0.0
    for path in itertools.product(range(source.num_states), repeat=len(seq)):
        p = pi[path[0]] * b[path[0], seq[0]]
        for t in range(1, len(seq)):
            p *= a[path[t - 1], path[t]] * b[path[t], seq[t]]
        total += p
    return total


def test_forward_algorithm_equals_brute_force_over_every_sequence():
    """Every sequence of length 5: the forward algorithm's log p(x_t | x_<t) equals the
    ratio of brute-force path sums, and the exact cross-entropy (the probability-weighted
    mean over all 3^5 sequences) equals the brute-force chain-rule sum."""
    source, length = tiny_source(), 5
    seqs = np.array(list(itertools.product(range(3), repeat=length)))
    forward = source.conditional_log_probs(seqs)  # [243, 5]
    prefix = {(): 1.0}
    for n in range(1, length + 1):
        for seq in itertools.product(range(3), repeat=n):
            prefix[seq] = brute_force_probability(source, seq)
    brute = np.array([[np.log(prefix[tuple(s[:t + 1])] / prefix[tuple(s[:t])])
                       for t in range(length)] for s in seqs])
    np.testing.assert_allclose(forward, brute, rtol=0, atol=1e-12)
    weights = np.array([prefix[tuple(s)] for s in seqs])
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    exact = float(weights @ -forward[:, 1:].mean(axis=1))
    chain = float(-sum(w * (np.log(prefix[tuple(s)]) - np.log(prefix[tuple(s[:1])]))
                       for w, s in zip(weights, seqs, strict=True)) / (length - 1))
    assert exact == pytest.approx(chain, abs=1e-12)
    assert 0.3 < exact < np.log(3)  # structure: below the uniform bound, above 0


def test_sampler_draws_from_the_source():
    """Frequencies of the first three symbols of 60k sampled windows match the brute-force
    probabilities (a transposed matrix or a skipped jump would not), and the optimum on the
    samples is their exact expected cross-entropy to sampling error."""
    source = tiny_source()
    windows = source.sample(60_000, 3, np.random.default_rng(0))
    counts = np.zeros((3, 3, 3))
    np.add.at(counts, tuple(windows.T), 1)
    for seq in itertools.product(range(3), repeat=3):
        p = brute_force_probability(source, seq)
        sigma = np.sqrt(p * (1 - p) / len(windows))
        assert abs(counts[seq] / len(windows) - p) < 5 * sigma + 1e-9, seq
    seqs = np.array(list(itertools.product(range(3), repeat=3)))
    weights = np.array([brute_force_probability(source, tuple(s)) for s in seqs])
    exact = float(weights @ -source.conditional_log_probs(seqs)[:, 1:].mean(axis=1))
    assert source.optimal_loss(windows) == pytest.approx(exact, abs=0.01)


def test_synthetic_lm_is_seeded_cached_and_has_its_optimum():
    kwargs = dict(context=16, train_tokens=4096, test_tokens=1024, num_states=32)
    first = synthetic_lm(seed=3, **kwargs)
    assert synthetic_lm(seed=3, **kwargs) is first  # cached per arguments
    assert data.load_dataset("synthetic_lm", seed=3, **kwargs) is first
    other = synthetic_lm(seed=4, **kwargs)
    assert not np.array_equal(first.train_x, other.train_x)
    assert first.train_x.shape == (256, 16) and first.test_x.shape == (64, 16)
    assert first.train_x.dtype == np.int32 and first.num_classes == 256
    np.testing.assert_array_equal(first.train_x[:, 1:], first.train_y[:, :-1])  # y: next token
    assert set(np.unique(first.train_x)) <= set(PRINTABLE.tolist())
    # The stored optimum is the forward algorithm's on the test windows, over the predicted
    # tokens (every one but each window's first).
    source = make_source(3, 32)
    test_windows = np.concatenate([first.test_x, first.test_y[:, -1:]], axis=1)
    predicted = source.conditional_log_probs(test_windows)[:, 1:]
    assert predicted.size == first.test_y.size
    assert first.optimal_test_loss == pytest.approx(-predicted.mean(), abs=1e-12)
    assert 0.5 < first.optimal_test_loss < np.log(len(PRINTABLE))


def test_unknown_data_kwargs_are_refused():
    with pytest.raises(ValueError, match="does not take contxt; it takes branching, context,"):
        data.load_dataset("synthetic_lm", contxt=8)
    with pytest.raises(ValueError, match="'mnist1d' does not take context; it takes num_test, "
                       "num_train, validation_size"):
        data.load_dataset("mnist1d", context=8)


@pytest.mark.slow
def test_a_model_trained_long_approaches_the_optimum_from_above():
    """A one-block transformer trained with Adam on the tiny source: its test cross-entropy
    falls toward the exact optimum and stays above it (the optimum is a floor: a wrong,
    too-high optimum would be crossed)."""
    source, context = tiny_source(), 8
    rng = np.random.default_rng(1)
    train = source.sample(16384, context + 1, rng)
    test = source.sample(1024, context + 1, rng)
    dataset = token_dataset("tiny", train, test, 3,
                            optimal_test_loss=source.optimal_loss(test))
    model = models.get_model("transformer", 3, width=32, depth=1, num_heads=2)
    params = init_params(model, dataset.example_shape, jax.random.PRNGKey(0))
    tx = optax.adam(3e-3)

    train_x, train_y = jnp.asarray(dataset.train_x), jnp.asarray(dataset.train_y)

    @jax.jit
    def steps(params, opt_state, idx):
        def step(carry, i):
            params, opt_state = carry
            grads = jax.grad(lambda p: models.cross_entropy(
                model.apply({"params": p}, train_x[i]), train_y[i]))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt_state), idx)[0]

    evaluate = make_evaluator(model)
    opt_state = tx.init(params)
    losses = [evaluate(params, dataset.test_x, dataset.test_y)[0]]  # at initialization
    for _ in range(4):
        idx = jnp.asarray(rng.integers(0, len(train), size=(50, 32)))
        params, opt_state = steps(params, opt_state, idx)
        losses.append(evaluate(params, dataset.test_x, dataset.test_y)[0])
    gaps = np.array(losses) - dataset.optimal_test_loss
    print(f"optimum {dataset.optimal_test_loss:.4f}; test loss every 50 steps from 0: "
          + ", ".join(f"{x:.4f}" for x in losses))
    assert np.all(gaps > 0), (losses, dataset.optimal_test_loss)
    assert gaps[0] > 0.05 and gaps[-1] < 0.02, (losses, dataset.optimal_test_loss)
