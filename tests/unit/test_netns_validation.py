"""benchmarks/netns_validation.py's pure parts: the prediction from given constants, the
table's verdict, the link's constants from the socket's medians, and the one-line refusal
where namespaces or tbf cannot be made (the namespaces themselves need root: not here)."""

import subprocess

import pytest

from benchmarks import netns_validation as nv


def _by_hand(c: nv.Constants, tau: int, first: int, last: int) -> float:
    """Seconds per step between the steps, from the ring's T(b, 2) = 2 (lat + b / (2 bw))
    and the exchange steps 0, tau, 2 tau, ... (EAMSGD's open each period)."""
    exchanges = sum(1 for t in range(first, last) if t % tau == 0)
    ring = lambda b: 2 * (c.latency_s + b / (2 * c.bandwidth_bytes_per_s)) if b else 0.0  # noqa: E731
    return (c.compute_s * (last - first) + exchanges * ring(c.exchange_bytes)
            + (last - first - exchanges) * ring(c.local_bytes)) / (last - first)


@pytest.mark.parametrize("tau", [1, 3, 8])
@pytest.mark.parametrize("local_bytes", [0.0, 1000.0])
def test_prediction_is_the_ring_clock_over_the_window(tau, local_bytes):
    c = nv.Constants(compute_s=0.03, bandwidth_bytes_per_s=12.5e6, latency_s=1e-4,
                     exchange_bytes=4.5e6, local_bytes=local_bytes)
    per_step, share = nv.predict(c, tau, 48, 96)
    assert per_step == pytest.approx(_by_hand(c, tau, 48, 96), rel=1e-12)
    assert share == pytest.approx(1 - 0.03 / per_step, rel=1e-12)
    if tau == 1 and not local_bytes:  # the numbers themselves, once: 30 ms + 360.2 ms
        assert per_step == pytest.approx(0.03 + 4.5e6 / 12.5e6 + 2e-4, rel=1e-12)


def test_verdict_passes_within_the_tolerance_and_fails_outside():
    inside = [(1, 0.400, 0.420, 0.9), (8, 0.100, 0.085, 0.5)]
    lines, passed = nv.table(inside, tolerance=0.2)
    assert passed and lines[-1].startswith("PASSED")
    assert "| 1 | 400.0 | 420.0 | +5.0% | 90% |" in lines
    assert "| 8 | 100.0 | 85.0 | -15.0% | 50% |" in lines
    for bad in [(4, 0.100, 0.125, 0.4), (4, 0.100, 0.079, 0.4), (4, 0.100, float("nan"), 0.4)]:
        lines, passed = nv.table([*inside, bad], tolerance=0.2)
        assert not passed and lines[-1] == "FAILED: tau = 4 outside +-20%", lines[-1]


def test_link_constants_from_the_socket_medians():
    bandwidth, latency = 11.7e6, 7e-5
    sizes = nv.CALIBRATION_BYTES
    seconds = [latency + n / bandwidth - 1e-3 for n in sizes]  # a bucket's burst: intercept
    fitted_bw, fitted_latency = nv.fit_link(sizes, seconds, round_trip_s=1.4e-4)
    assert fitted_bw == pytest.approx(bandwidth, rel=1e-9)
    assert fitted_latency == pytest.approx(7e-5, rel=1e-12)
    with pytest.raises(ValueError, match="do not grow"):
        nv.fit_link(sizes, seconds[::-1], 1e-4)


class _FakeIp:
    """subprocess.run for ``ip``/``tc``: fails the command that starts with ``fail``."""

    def __init__(self, fail: tuple[str, ...] | None, error: Exception | None = None):
        self.fail, self.error, self.calls = fail, error, []

    def __call__(self, command, **kwargs):
        self.calls.append(command)
        if self.fail is not None and tuple(command[:len(self.fail)]) == self.fail:
            if self.error is not None:
                raise self.error
            return subprocess.CompletedProcess(
                command, 1, "", "mount --make-shared /run/netns failed: Operation not "
                "permitted\n")
        return subprocess.CompletedProcess(command, 0, "", "")


@pytest.mark.parametrize("fail, error, expected", [
    (("ip", "netns", "add"), None,
     "netns_validation: needs root and network namespaces (`ip netns add`), which failed "
     "here: mount --make-shared /run/netns failed: Operation not permitted"),
    (("ip", "netns", "add"), FileNotFoundError(2, "No such file or directory"),
     "netns_validation: needs root and network namespaces (`ip netns add`): ip: No such "
     "file or directory"),
    (("tc",), None,
     "netns_validation: needs root and a tbf qdisc (`tc qdisc ... tbf`), which failed "
     "here: mount --make-shared /run/netns failed: Operation not permitted"),
    (None, None, None),
])
def test_refusal_is_one_line_and_leaves_nothing_behind(fail, error, expected):
    fake = _FakeIp(fail, error)
    assert nv.refusal(run=fake, probe="p") == expected
    assert fake.calls[-1] == ["ip", "netns", "del", "p"]  # the probe removed, every time
