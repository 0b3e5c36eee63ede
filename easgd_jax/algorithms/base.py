"""What every algorithm family shares: axis names, the asynchronous rule protocol with its
typed worker and master states, and :class:`Spec`, the registry's entry for one name.

Each family module (``elastic``, ``distbelief``, ``baselines``, ``leader``, ``adaptive``) holds
its synchronous optax transformations AND its asynchronous rules; both call the family's pure
exchange function (worker params, master) -> (worker delta, center delta).

Asynchronous rules (Zhang, Choromanska & LeCun, NIPS 2015, arXiv 1412.6651, Algorithms 1-2,
and their relatives): each worker i runs on its own local clock t_i (starting at 0, so the
first step communicates) and talks to the master alone, one worker at a time, in arrival
order. Every rule is split the same way, so that the seeded-asynchrony executor
(``parallel/schedules.py``) and the real parameter server (``parallel/server.py``,
``parallel/ray_server.py``) run it unchanged; the master's part is a pure function applied
atomically, one worker at a time:

    g, loss = grad(gradient_point(w))          worker, at the snapshot
    w = before(w, g, loss)                     worker (DOWNPOUR's accumulation)
    if communicates(t_i, T):
        vectors, scalars = message(w, g, i)    worker -> master
        master, center_delta, replies = exchange(master, vectors, scalars)    ATOMIC
        w = receive(w, replies)                master -> worker
    w = after(w, g, communicated)              worker (the local step, t_i += 1)

``vectors``, ``replies`` and the master's arrays are shaped like the params and the exchange
is elementwise on them (except LSGD's leader choice), so a parameter server may split them
into flat shards and apply each shard independently. The executors know only this protocol
(and ``master.center``, the evaluated point), never a family.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import jax
import jax.numpy as jnp
import optax

AxisName = str | tuple[str, ...]
Params = Any
Vectors = tuple[Any, ...]
Scalars = tuple[Any, ...]

# The arguments of a synchronous constructor that are not hyperparameters (the executor
# passes them), and the one an asynchronous rule may take besides the hyperparameters.
AXIS_ARGUMENTS = ("axis_name", "group_axis_name")
# ... and how a replicated center's disagreement is reported (collectives.DISAGREEMENT_MODES).
ON_DISAGREEMENT = "on_disagreement"
BUILD_ARGUMENTS = (*AXIS_ARGUMENTS, ON_DISAGREEMENT)
NUM_WORKERS = "num_workers"


def fresh_copy(tree: optax.Params) -> optax.Params:
    """``tree`` in new buffers.

    Every ``init`` stores its copies of the params (the center x~, the average z, the
    master's x) through this: ``jnp.asarray(params)`` under an eager ``jax.vmap(tx.init)``
    returns the params' own arrays, and a step that donates ``(params, opt_state)`` then
    donates one buffer twice.
    """
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


CENTER_DTYPE = "float32"


def check_center_dtype(center_dtype: Any) -> None:
    """None or the name (or type) of a floating dtype."""
    if center_dtype is None:
        return
    try:
        ok = jnp.issubdtype(jnp.dtype(center_dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"center_dtype must be None or a floating dtype such as 'float32', "
                         f"got {center_dtype!r}.")


def center_copy(params: optax.Params, center_dtype: Any = CENTER_DTYPE) -> optax.Params:
    """A copy of ``params`` (fresh buffers) to keep as a center, average or master velocity:
    each floating leaf in ``promote_types(leaf dtype, center_dtype)`` (float32 by default:
    bfloat16 params get a float32 center, float32 and float64 ones keep theirs), other
    leaves as they are; ``center_dtype=None`` keeps every leaf's dtype.

    A center in bfloat16 (8 bits of mantissa) cannot take small elastic steps: alpha
    (x_i - x~) below 1/256 of x~ rounds away, and a moving average with rate 0.001 never
    moves.
    """
    if center_dtype is None:
        return fresh_copy(params)

    def copy(a):
        a = jnp.asarray(a)
        if jnp.issubdtype(a.dtype, jnp.floating):
            return jnp.array(a, dtype=jnp.promote_types(a.dtype, center_dtype), copy=True)
        return jnp.array(a, copy=True)

    return jax.tree.map(copy, params)


INIT_PER_WORKER = (
    "init runs once per worker, on that worker's params: for p workers stacked along a "
    "leading axis, opt_state = jax.vmap(tx.init)(stacked_params) (stacked_params = "
    "easgd_jax.replicate(params, p)), and update under the same mapping, "
    "jax.vmap(step, axis_name=...) or jax.shard_map; tx.init(stacked_params) builds ONE "
    "state with scalar counters and a stacked copy, which is not a state per worker.")


def check_per_worker(copy: optax.Params, params: optax.Params, field: str = "center") -> None:
    """ValueError when the state's copy of the params (``field``) is not shaped like one
    worker's ``params``: the state was built by ``tx.init`` on stacked params, or is used
    with another model."""
    copy_shapes = [jnp.shape(a) for a in jax.tree.leaves(copy)]
    param_shapes = [jnp.shape(a) for a in jax.tree.leaves(params)]
    if copy_shapes != param_shapes:
        raise ValueError(
            f"the optimizer state's {field} has leaf shapes {copy_shapes[:4]} where this "
            f"worker's params have {param_shapes[:4]}. " + INIT_PER_WORKER)


# State fields of the transformations that act on the params themselves (the elastic force,
# DOWNPOUR's fetch of the center, LSGD's pull, the averages of the iterates): their updates
# are exact only when applied as they are, so they must be the LAST of an optax.chain.
PARAMS_ACTING_FIELDS = ("center", "average", "leader")


def _params_acting(node: Any) -> list[str]:
    """The type names of the params-acting states inside ``node`` (at any depth)."""
    found = []
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        if any(f in PARAMS_ACTING_FIELDS for f in node._fields):
            found.append(type(node).__name__)
    if isinstance(node, tuple | list):
        children = list(node)
    elif isinstance(node, dict):
        children = list(node.values())
    else:
        children = []
    for child in children:
        found += _params_acting(child)
    return found


def check_chain_order(opt_state: optax.OptState) -> None:
    """Refuses an optimizer state in which a params-acting transformation (EASGD/EAMSGD,
    DOWNPOUR and its variants, LSGD, ASGD/MVASGD: a state with a ``center``, ``average``
    or ``leader`` field) is followed by another transformation in an ``optax.chain``.

    Their updates hold a move of the params themselves (the elastic force
    -alpha (x_i - x~), DOWNPOUR's jump to the center, LSGD's pull), not only the scaled
    gradient: ``optax.chain(eamsgd(...), optax.scale(0.5))`` halves the elastic force
    along with the step and silently changes the algorithm. Put them last:
    ``optax.chain(optax.clip_by_global_norm(1.0), eamsgd(...))``. A chain's state is a
    plain tuple, one entry per transformation, so the order is read off the state's
    structure (stacked or not; nothing is computed).
    """
    def visit(node: Any) -> None:
        if type(node) is tuple:  # an optax.chain's state
            for i, child in enumerate(node[:-1]):
                names = _params_acting(child)
                if names:
                    raise ValueError(
                        f"optax.chain: transformation {i} of {len(node)} (state "
                        f"{names[0]}) moves the params themselves (elastic force, "
                        f"fetch of the center, pull to the leader, average of the iterates), "
                        f"and {len(node) - 1 - i} transformation(s) come after it, which "
                        "would rescale or clip that move too (optax.chain(eamsgd, "
                        "scale(0.5)) halves the elastic force). Put it LAST: "
                        "optax.chain(<gradient transformations>, eamsgd(...)).")
        if isinstance(node, tuple | list):
            for child in node:
                visit(child)
        elif isinstance(node, dict):
            for child in node.values():
                visit(child)

    visit(opt_state)


def replicate(params: optax.Params, num_workers: int) -> optax.Params:
    """``num_workers`` identical copies of ``params``, stacked along a new leading axis.

    The starting point of a synchronous run: every algorithm that keeps a replicated copy
    (EASGD's center, DOWNPOUR's master) takes it from its worker's own ``init``, so the
    workers must start equal; ``jax.vmap(tx.init)(replicate(params, p))`` is the state of p
    workers. Initialising each worker with its own random key instead makes the copies
    differ (the exchange then stops with an error naming it).
    """
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}.")
    return jax.tree.map(
        lambda a: jnp.array(jnp.broadcast_to(a, (num_workers, *jnp.shape(a))), copy=True),
        params)


def tree_add(tree: Params, delta: Params) -> Params:
    """``tree + delta`` leaf by leaf, in the dtype of ``tree``."""
    return jax.tree.map(lambda x, d: (x + d).astype(x.dtype), tree, delta)


def tree_select(pred: Any, on_true: Params, on_false: Params) -> Params:
    """``on_true`` where ``pred`` else ``on_false``, leaf by leaf."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


# --------------------------------------------------------------------------- async protocol

Extra = TypeVar("Extra")
Master = TypeVar("Master", bound="MasterState")


class NoExtra(NamedTuple):
    """The ``extra`` of a worker that is its params and clock alone (EASGD, APAM)."""


class AsyncWorkerState(NamedTuple, Generic[Extra]):
    """One worker's state in an asynchronous run.

    Attributes:
        params: x_i, the worker variable (APAM: the worker's last read of the master).
        count: t_i, the local clock (int32).
        extra: the rule's own buffers, a NamedTuple per rule (EAMSGD's velocity, DOWNPOUR's
            accumulator, LSGD's inner state and losses; :class:`NoExtra` otherwise).
    """

    params: Params
    count: jax.Array
    extra: Extra


class MasterState(Protocol):
    """Every master state is a NamedTuple whose ``center`` field is the evaluated point."""

    @property
    def center(self) -> Params: ...


class CenterState(NamedTuple):
    """The master of EASGD, EAMSGD and DOWNPOUR: the center x~ alone."""

    center: Params


@dataclasses.dataclass(frozen=True)
class AsyncRule(Generic[Extra, Master]):
    """An asynchronous algorithm split into worker-side parts and one atomic master part.

    Attributes:
        name: the algorithm's name.
        init_worker: ``params -> AsyncWorkerState``.
        init_master: ``params -> master state``; elementwise in the params (a flat slice
            of them gives the master of that slice).
        gradient_point: ``worker -> params`` where the gradient is taken.
        communicates: ``(t_i, T) -> bool``, on Python ints or jax arrays; T is the number of
            local steps all workers took before this one (the total-iteration clock).
        before: ``(worker, grad, loss) -> worker``, local work before the exchange.
        message: ``(worker, grad, worker_index) -> (vectors, scalars)``: what is sent; the
            vectors are shaped like the params.
        exchange: ``(master, vectors, scalars) -> (master, center_delta, replies)``, pure;
            the new master's center is ``center + center_delta``; the replies are shaped
            like the params.
        receive: ``(worker, replies) -> worker``.
        after: ``(worker, grad, communicated) -> worker``, the local step; t_i += 1.
        stateless_worker: every step communicates and the reply alone makes the worker
            (APAM, DOWNPOUR with tau = 1): such rules also run under the random-delay
            schedule, with each gradient taken at a stale master iterate.
        shardable: the exchange is elementwise over the vectors and the master's arrays,
            so the master may be split into independently locked shards.
    """

    name: str
    init_worker: Callable[[Params], AsyncWorkerState[Extra]]
    init_master: Callable[[Params], Master]
    gradient_point: Callable[[AsyncWorkerState[Extra]], Params]
    communicates: Callable[[Any, Any], Any]
    before: Callable[[AsyncWorkerState[Extra], Params, Any], AsyncWorkerState[Extra]]
    message: Callable[[AsyncWorkerState[Extra], Params, Any], tuple[Vectors, Scalars]]
    exchange: Callable[[Master, Vectors, Scalars], tuple[Master, Params, Vectors]]
    receive: Callable[[AsyncWorkerState[Extra], Vectors], AsyncWorkerState[Extra]]
    after: Callable[[AsyncWorkerState[Extra], Params, Any], AsyncWorkerState[Extra]]
    stateless_worker: bool = False
    shardable: bool = True


# Building blocks of the rules, shared by the families.

def init_worker(params: Params, extra: Any = None) -> AsyncWorkerState:
    """A worker at ``params`` (in fresh buffers), clock 0, with the rule's ``extra``
    (:class:`NoExtra` when None)."""
    extra = NoExtra() if extra is None else extra
    return AsyncWorkerState(fresh_copy(params), jnp.zeros([], jnp.int32), extra)


def init_center_master(params: Params) -> CenterState:
    """A master that holds the center x~ = ``params`` (in fresh buffers)."""
    return CenterState(fresh_copy(params))


def periodic(period: int) -> Callable[[Any, Any], Any]:
    """``communicates`` of a rule on the local clock: tau divides t_i."""

    def communicates(count, total):
        del total
        return count % period == 0

    return communicates


def keep_worker(worker: AsyncWorkerState, grad: Params, loss: Any) -> AsyncWorkerState:
    """``before`` of a rule with no local work before the exchange."""
    del grad, loss
    return worker


def send_params(worker: AsyncWorkerState, grad: Params, index: Any) -> tuple[Vectors, Scalars]:
    """``message`` of a rule that sends x_i alone."""
    del grad, index
    return (worker.params,), ()


def receive_delta(worker: AsyncWorkerState, replies: Vectors) -> AsyncWorkerState:
    """``receive`` of a rule whose one reply is a delta to add to x_i."""
    return worker._replace(params=tree_add(worker.params, replies[0]))


# --------------------------------------------------------------------------- Spec

# Where an algorithm is evaluated: ``evaluation(opt_state, params) -> (point, index)``, the
# stacked tree the point is read from (as stacked as the inputs) and the index along the
# worker axis of the copy to evaluate.
EvaluationPoint = Callable[[optax.OptState, optax.Params], tuple[optax.Params, Any]]


def _state_field(opt_state: optax.OptState, field: str) -> Any:
    found = optax.tree_utils.tree_get(opt_state, field)
    if found is None:
        raise ValueError(f"it is evaluated on its state's {field!r}, and this optimizer state "
                         "holds none.")
    return found


def evaluate_center(opt_state: optax.OptState, params: optax.Params) -> tuple[Any, Any]:
    """The center x~ (the state's ``center`` field), worker 0's copy."""
    del params
    return _state_field(opt_state, "center"), jnp.zeros([], jnp.int32)


def evaluate_average(opt_state: optax.OptState, params: optax.Params) -> tuple[Any, Any]:
    """The average z of ASGD / ADOWNPOUR (the state's ``average`` field), worker 0's copy."""
    del params
    return _state_field(opt_state, "average"), jnp.zeros([], jnp.int32)


def _leader_point(field: str) -> EvaluationPoint:
    def evaluate(opt_state: optax.OptState, params: optax.Params) -> tuple[Any, Any]:
        found = _state_field(opt_state, field)
        return params, jnp.maximum(jnp.asarray(found).reshape(-1)[0], 0)

    evaluate.__name__ = f"evaluate_{field}"
    evaluate.__doc__ = (f"The params of the worker the state's ``{field}`` names (LSGD; "
                        "worker 0 before the first is chosen).")
    return evaluate


evaluate_leader = _leader_point("leader")
evaluate_global_leader = _leader_point("global_leader")


def evaluate_params(opt_state: optax.OptState, params: optax.Params) -> tuple[Any, Any]:
    """Worker 0's params (SGD, MSGD, data-parallel SGD)."""
    del opt_state
    return params, jnp.zeros([], jnp.int32)


# The evaluation points by name, for ``register(name, constructor, evaluation="center")``.
EVALUATION_POINTS: dict[str, EvaluationPoint] = {
    "center": evaluate_center, "average": evaluate_average, "leader": evaluate_leader,
    "global_leader": evaluate_global_leader, "params": evaluate_params}
EVALUATIONS = tuple(EVALUATION_POINTS)


class WorkerAxes(Protocol):
    """The worker axes of a layout (``parallel.WorkerLayout``): all workers' axis, and on a
    grouped layout the axes of the workers inside a group and of the groups."""

    axis_name: AxisName
    member_axis_name: AxisName
    group_axis_name: AxisName | None


class NamedAxes(NamedTuple):
    """Worker axes given by name (a :class:`WorkerAxes` without a device layout): for a
    transformation that is lowered on an abstract mesh of these names, or only initialised."""

    axis_name: AxisName
    member_axis_name: AxisName
    group_axis_name: AxisName | None


def _parameters(fn: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(fn).parameters)


ConfigCheck = Callable[[str, Mapping[str, Any], int], None]


@dataclasses.dataclass(frozen=True)
class Spec:
    """One registered algorithm: the one place that knows it. Its forms, its exchange clock
    (:meth:`period`, :meth:`exchange_interval`), its derived rates (:meth:`hyperparameters`:
    a stated beta becomes moving_rate = beta / p), how it is built on a layout
    (:meth:`build`: which axes, grouped or not), its evaluation point and its config checks.

    Attributes:
        name: the registered name (``config.algorithm.name``).
        sync: the synchronous constructor, ``(**hparams, axis_name[, group_axis_name]) ->
            GradientTransformation``, or None (asynchronous only: APAM).
        async_rule: the asynchronous constructor, ``(**hparams[, num_workers]) ->
            AsyncRule``, with the hyperparameter names of ``sync`` (a subset); or None.
        evaluation: the point the EASGD paper reports losses and errors of, a callable
            ``(opt_state, params) -> (stacked point, worker index)``: :func:`evaluate_center`
            (x~, the state's ``center`` field), :func:`evaluate_average` (z of
            ADOWNPOUR/ASGD), :func:`evaluate_leader` / :func:`evaluate_global_leader` (LSGD:
            the params of the worker those fields name) or :func:`evaluate_params` (worker
            0's); a name of :data:`EVALUATION_POINTS` is accepted and looked up.
            Asynchronous runs always evaluate their master's ``center``.
        grouped: the synchronous form runs on a (groups x workers) layout and takes
            ``group_axis_name``.
        reported: integer state fields worth a line in the metrics per round (LSGD's leaders).
        exchange_step: which local step of each period communicates: ``"first"`` (t mod
            tau = 0, the EASGD paper's algorithms) or ``"last"`` ((t + 1) mod tau = 0:
            DiLoCo's outer step closes each block). The synchronous executor traces its
            rounds accordingly (``parallel.make_round(exchange_step=...)``).
        topology: how its synchronous exchange travels on the simulated cluster
            (``parallel.cluster``): ``"ring"`` (an all-reduce: EASGD, data-parallel SGD,
            LSGD, DiLoCo) or ``"parameter_server"`` (every worker pushes to and pulls from
            one master through its link: DOWNPOUR and its variants).
        config_check: ``(name, hparams, num_workers) -> None``, raising ValueError (or
            warning) for hyperparameters the algorithm cannot run with on p workers (the
            stability bound of synchronous EASGD,
            :func:`~easgd_jax.algorithms.rates.check_elastic_stability`); None: none beyond
            the constructor's own.

    The fields are found in the optimizer state by name at any depth
    (``optax.tree_utils.tree_get``), so a wrapper such as ``optax.chain`` needs no special
    case; a missing field is an error, never a silent fallback.
    """

    name: str
    sync: Callable[..., optax.GradientTransformation] | None
    async_rule: Callable[..., AsyncRule] | None
    evaluation: EvaluationPoint | str
    grouped: bool = False
    reported: tuple[str, ...] = ()
    exchange_step: str = "first"
    topology: str = "ring"
    config_check: ConfigCheck | None = None

    def __post_init__(self) -> None:
        if isinstance(self.evaluation, str):
            if self.evaluation not in EVALUATION_POINTS:
                raise ValueError(f"evaluation of {self.name!r} must be a callable or one of "
                                 f"{', '.join(EVALUATIONS)}; got {self.evaluation!r}.")
            object.__setattr__(self, "evaluation", EVALUATION_POINTS[self.evaluation])
        if not callable(self.evaluation):
            raise ValueError(f"evaluation of {self.name!r} must be a callable (opt_state, "
                             f"params) -> (point, worker index); got {self.evaluation!r}.")
        if self.topology not in ("ring", "parameter_server"):
            raise ValueError(f"topology of {self.name!r} must be 'ring' or 'parameter_server'; "
                             f"got {self.topology!r}.")
        if self.exchange_step not in ("first", "last"):
            raise ValueError(f"exchange_step of {self.name!r} must be 'first' or 'last'; got "
                             f"{self.exchange_step!r}.")
        if self.sync is None and self.async_rule is None:
            raise ValueError(f"algorithm {self.name!r} needs a sync or an async_rule form.")
        if not isinstance(self.reported, tuple):
            raise ValueError(f"reported of {self.name!r} must be a tuple of field names.")
        self._check_forms()

    def _check_forms(self) -> None:
        if self.sync is not None:
            params = _parameters(self.sync)
            if "axis_name" not in params:
                raise ValueError(f"the constructor of {self.name!r} must accept axis_name.")
            if self.grouped != ("group_axis_name" in params):
                raise ValueError(f"grouped={self.grouped} for {self.name!r}, whose constructor "
                                 f"{'does not take' if self.grouped else 'takes'} "
                                 "group_axis_name.")
        elif self.grouped:
            raise ValueError(f"{self.name!r} has no synchronous form and cannot be grouped.")
        if self.sync is not None and self.async_rule is not None:
            extra = set(self.hyperparameter_names(True)) - set(self.hyperparameter_names())
            if extra:
                raise ValueError(f"the asynchronous rule of {self.name!r} takes "
                                 f"{', '.join(sorted(extra))}, which its synchronous form "
                                 "does not: the two share one config.")

    def hyperparameter_names(self, asynchronous: bool = False) -> list[str]:
        """The hyperparameters of the form: all its arguments but the axis names (sync) or
        ``num_workers`` (async, which the executor passes)."""
        form = self.form(asynchronous)
        skip = (NUM_WORKERS,) if asynchronous else BUILD_ARGUMENTS
        return [p for p in _parameters(form) if p not in skip]

    def form(self, asynchronous: bool = False) -> Callable[..., Any]:
        """The asynchronous or synchronous constructor; ValueError if there is none."""
        if asynchronous:
            if self.async_rule is None:
                raise ValueError(f"algorithm {self.name!r} has no asynchronous rule.")
            return self.async_rule
        if self.sync is None:
            raise ValueError(f"algorithm {self.name!r} has no synchronous form; it runs "
                             "asynchronously only.")
        return self.sync

    # ------------------------------------------------------------ hyperparameters and clock

    def _names(self) -> list[str]:
        return self.hyperparameter_names(asynchronous=self.sync is None)

    def hyperparameters(self, given: Mapping[str, Any], num_workers: int) -> dict[str, Any]:
        """The constructor's keyword arguments from a config's ``given`` ones on
        ``num_workers`` workers: a stated ``beta`` becomes ``moving_rate = beta / p``
        (:func:`~easgd_jax.algorithms.rates.moving_rate`, the one place it is computed)."""
        from easgd_jax.algorithms import rates

        return rates.resolve_beta(given, num_workers, rates.MOVING_RATE in self._names())

    def period(self, hparams: Mapping[str, Any]) -> int | None:
        """tau (DiLoCo's H): the ``period`` hyperparameter of an algorithm that takes one,
        else None (it exchanges, or needs no exchange, every step)."""
        if "period" not in self._names():
            return None
        if "period" in hparams:
            return int(hparams["period"])
        default = inspect.signature(self.form(self.sync is None)).parameters["period"].default
        return None if default is inspect.Parameter.empty else int(default)

    def num_fragments(self, hparams: Mapping[str, Any]) -> int:
        """F, the pieces a period's exchange is split into (streaming fragments: one piece
        every tau / F steps; the constructor requires F to divide tau); 1 otherwise."""
        period, fragments = self.period(hparams), hparams.get("num_fragments") or 1
        if (period is None or not isinstance(fragments, int) or fragments < 1
                or period % fragments):
            return 1
        return fragments

    def exchange_interval(self, hparams: Mapping[str, Any]) -> int:
        """Local steps between two exchanges: tau / F (:meth:`num_fragments`); 1 without a
        period (every step)."""
        period = self.period(hparams)
        return 1 if period is None else period // self.num_fragments(hparams)

    def models_exchanged_per_step(self, hparams: Mapping[str, Any]) -> float:
        """Model-sized exchanges per local step: 1 / tau (fragments change how it is split,
        not the volume), 1 without a period (an all-reduce every step)."""
        period = self.period(hparams)
        return 1.0 / period if period else 1.0

    def check_config(self, hparams: Mapping[str, Any], num_workers: int) -> None:
        """The algorithm's own config checks (``config_check``) on its hyperparameters."""
        if self.config_check is not None:
            self.config_check(self.name, hparams, num_workers)

    # ------------------------------------------------------------------------- building

    def axes(self, layout: WorkerAxes) -> dict[str, AxisName]:
        """The axis arguments of the synchronous constructor on ``layout``: all workers'
        axis, or for a grouped algorithm the members' axis and the groups' axis."""
        if self.grouped:
            return {"axis_name": layout.member_axis_name,
                    "group_axis_name": layout.group_axis_name}
        return {"axis_name": layout.axis_name}

    def build(self, hparams: Mapping[str, Any], layout: WorkerAxes,
              **builder_arguments: Any) -> optax.GradientTransformation:
        """The synchronous transformation with ``hparams`` (constructor arguments, checked
        by name) on ``layout``'s axes; ``builder_arguments`` (arguments that are not
        hyperparameters, such as ``on_disagreement``) go to a constructor that takes them
        and are left out for one that does not (a user's registered algorithm without a
        replicated center)."""
        params = inspect.signature(self.form()).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        passed = {k: v for k, v in builder_arguments.items() if takes_any or k in params}
        return self.form()(**self.axes(layout), **hparams, **passed)

    # ----------------------------------------------------------------------- evaluation

    def evaluation_params(self, opt_state: optax.OptState, params: optax.Params) -> optax.Params:
        """The parameters to evaluate, as stacked as the inputs: the state's ``center`` or
        ``average`` field, else ``params`` (index them with :meth:`evaluation_worker`)."""
        return self._evaluate(opt_state, params)[0]

    def evaluation_worker(self, opt_state: optax.OptState,
                          params: optax.Params = None) -> jax.Array:
        """Index along the stacked worker axis of the copy to evaluate: the last (global)
        leader for LSGD (0 before the first is chosen), else 0."""
        return jnp.asarray(self._evaluate(opt_state, params)[1])

    def _evaluate(self, opt_state: optax.OptState, params: optax.Params) -> tuple[Any, Any]:
        try:
            return self.evaluation(opt_state, params)  # type: ignore[operator]
        except ValueError as e:
            raise ValueError(f"algorithm {self.name!r}: {e}") from None

    def reported_state(self, opt_state: optax.OptState) -> dict[str, jax.Array]:
        """The ``reported`` fields of ``opt_state``, by name."""
        try:
            return {field: _state_field(opt_state, field) for field in self.reported}
        except ValueError as e:
            raise ValueError(f"algorithm {self.name!r}: {e}") from None
