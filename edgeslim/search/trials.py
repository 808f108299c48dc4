"""Trials on Ray Tune: a local Ray (or an existing cluster), one Tune run per rung.

Ray Tune runs the trials: it places them on the cluster's CPUs (``resources`` per
trial), restarts nothing that dies (``max_failures = 0``: a trial whose worker is
killed is *lost*, and the others go on) and brings every trial's metrics back to
the driver. The training data and the model go through Ray's object store once.

Successive halving is synchronous here, one ``Tuner.fit`` per rung: every rung's
candidates train to the rung's epoch budget, then the best ``1/eta`` (ranked on
validation drop, ties on the candidate's index) go on to the next. Tune's
asynchronous ASHA promotes whichever trial reports first, so which candidates
survive would depend on completion order and the same seed could pick another
winner; a rung's results here depend only on (candidate, epochs, seed).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from edgeslim._determinism import restores_op_determinism
from edgeslim.errors import EdgeslimError

INSTALL_HINT = "Install the search extra: pip install edgeslim[search] (Ray Tune)."


def require_ray():
    """Import Ray Tune, or say how to install it."""
    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError:
        raise EdgeslimError("the budget search needs Ray Tune, which is not installed",
                            INSTALL_HINT) from None
    import ray

    return ray


@contextlib.contextmanager
def ray_session(address: str | None, num_cpus: int | None):
    """Connect to ``address`` (``auto`` or HOST:PORT), or start a local Ray limited to
    ``num_cpus`` (default: this machine's cores) and stop it afterwards."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray = require_ray()
    import edgeslim

    env = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_USE_LEGACY_KERAS": "1"}
    started_here = False
    if ray.is_initialized():
        info = {"address": "already connected", "started_here": False}
    elif address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                     logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise EdgeslimError(f"cannot connect to the Ray cluster at {address}: {exc}",
                                "Start it with `ray start --head` (docs/search.md), or drop "
                                "--ray-address for a local Ray.") from None
        info = {"address": address, "started_here": False}
    else:
        # Local workers import edgeslim from where this driver does (a checkout or the venv);
        # a cluster's nodes have their own installation (docs/search.md).
        src = str(Path(edgeslim.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        cpus = int(num_cpus or os.cpu_count() or 1)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", runtime_env={"env_vars": env},
                 object_store_memory=256 * 1024 * 1024)
        started_here = True
        info = {"address": "local", "started_here": True}
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        info["nodes"] = len(nodes)
        info["cpus"] = int(ray.cluster_resources().get("CPU", 0))
        yield ray, info
    finally:
        if started_here:
            ray.shutdown()


def _trainable(config, *, shared, recipes, float_val, max_drop, threads):
    """One trial: the candidate's recipe at the rung's epochs, its int8 model scored on
    validation. Runs in a Ray worker; TensorFlow's threads are capped to the trial's CPUs."""
    os.environ["EDGESLIM_THREADS"] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import socket

    import ray
    from ray import tune

    t0 = time.monotonic()
    payload = ray.get(shared[0])
    out = train_candidate(payload, recipes[config["cand"]], float_val=float_val, max_drop=max_drop)
    out.update(wall_s=time.monotonic() - t0, pid=os.getpid(), node=socket.gethostname(),
               node_id=ray.get_runtime_context().get_node_id())
    tune.report(out)


@restores_op_determinism
def train_candidate(payload: dict, table: dict, *, float_val: float, max_drop) -> dict:
    """Run a candidate's recipe (a TOML-shaped table) on the payload's model and data,
    exactly as ``edgeslim build --recipe`` would, and score its int8 model."""
    import hashlib

    from edgeslim import convert, evaluate, guard
    from edgeslim import recipe as recipe_mod
    from edgeslim._tf import keras, tf
    from edgeslim.compress.context import StageContext
    from edgeslim.pipeline import Progress, _run_stages

    rcp = recipe_mod.from_dict(table)
    ds = payload["data"]
    kmodel = keras.models.model_from_json(payload["model_json"])
    kmodel.set_weights(payload["weights"])
    seed = rcp.build.seed
    if seed is not None:
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
    ctx = StageContext(data=ds, seed=seed, batch_size=rcp.build.batch_size,
                       patience=rcp.build.patience, learning_rate=rcp.build.learning_rate)
    calib = calibration(rcp, ds, kmodel, seed)
    layer_names = [layer.name for layer in kmodel.layers]
    run = _run_stages(kmodel, rcp, ctx, calib, [], layer_names, Progress(), {})
    tfl = convert.to_int8_tflite(run.current, calib, int8_io=rcp.build.int8_io,
                                 allow_float_fallback=rcp.build.allow_float_fallback)
    val = ctx.score(evaluate.run_litert(tfl, ds.x_val), ds.y_val)
    budget = guard.Budget.for_task(max_drop, ds.task)
    import base64

    return {"val_metric": float(val), "val_drop": float(budget.drop(float_val, val)),
            "failed": run.failure or "", "tflite_bytes": len(tfl),
            "tflite_sha256": hashlib.sha256(tfl).hexdigest(),
            # the model itself, for the driver to measure what training changed (a few bytes
            # of generated C: see search.figures)
            "tflite_b64": base64.b64encode(tfl).decode("ascii")}


def calibration(rcp, ds, kmodel, seed):
    """The int8 calibration samples, chosen as the build chooses them."""
    import numpy as np

    from edgeslim import convert
    from edgeslim.io.dataset import CLASSIFICATION

    if rcp.build.calibration == "coreset":
        from edgeslim.compress import coreset

        picked = coreset.select(kmodel, ds.x_train,
                                ds.y_train if ds.task == CLASSIFICATION else None,
                                rcp.build.representative_samples, seed=seed)
        return np.asarray(ds.x_train[picked], dtype=np.float32)
    return convert.calibration_sample(ds.x_train, rcp.build.representative_samples, seed)


def run_rung(ray, *, shared_ref, recipes: dict[int, dict], epochs: int, rung: int,
             float_val: float, max_drop, resources: dict, storage: Path, progress) -> dict[int, dict]:
    """Train ``recipes`` (candidate index -> recipe table) as one Tune run; return
    candidate index -> the trial's metrics, or {"lost": reason} for a trial that died."""
    from ray import tune

    threads = max(1, int(resources.get("cpu", 1)))
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, shared=[shared_ref], recipes=recipes,
                             float_val=float_val, max_drop=max_drop, threads=threads),
        resources)
    ids = sorted(recipes)
    tuner = tune.Tuner(
        trainable,
        param_space={"cand": tune.grid_search(ids), "epochs": epochs},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"rung{rung}", storage_path=str(storage), verbose=0,
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            callbacks=[progress.tune_callback(rung)] if progress else None),
    )
    grid = tuner.fit()
    out: dict[int, dict] = {}
    for res in grid:
        # A trial killed before it reported may come back without its config: the
        # candidates with no result below are the lost ones.
        if not res.config or res.error is not None or not res.metrics or "val_drop" not in res.metrics:
            continue
        m = res.metrics
        out[int(res.config["cand"])] = {
            k: m[k] for k in ("val_metric", "val_drop", "failed", "tflite_bytes", "tflite_sha256",
                              "tflite_b64", "wall_s", "pid", "node", "node_id") if k in m}
    errors = progress.errors if progress else {}
    for cand in ids:
        if cand not in out:
            out[cand] = {"lost": errors.get(cand) or "the trial's worker died before it reported"}
    return out


def _build_task(payload, *, recipe: dict, threads: int, kwargs: dict):
    os.environ["EDGESLIM_THREADS"] = str(threads)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from edgeslim import recipe as recipe_mod
    from edgeslim._tf import keras
    from edgeslim.pipeline import build

    kmodel = keras.models.model_from_json(payload["model_json"])
    kmodel.set_weights(payload["weights"])
    return build(kmodel, payload["data"], recipe=recipe_mod.from_dict(recipe), **kwargs)


def build_on_driver_node(ray, shared_ref, resources: dict, *, recipe: dict, model_name: str,
                         **kwargs):
    """``pipeline.build`` of the winner's recipe in a Ray worker on the driver's node (its
    bundle lands on the driver's disk), with the CPUs and TensorFlow threads of a trial."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from edgeslim.errors import EdgeslimError as _Err

    node = ray.get_runtime_context().get_node_id()
    cpus = float(resources.get("cpu", 1))
    node_cpus = next((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes()
                      if n.get("NodeID") == node), 0)
    if node_cpus < cpus:
        # The driver's node offers Ray no CPU (e.g. a head started with --num-cpus 0): build
        # here; with another TensorFlow thread count the bytes may differ from the trial's
        # (search.json says whether they do), the budgets are measured on the bundle anyway.
        return _build_task(ray.get(shared_ref), recipe=recipe, threads=max(1, int(cpus)),
                           kwargs={**kwargs, "name": model_name})
    task = ray.remote(_build_task).options(
        num_cpus=resources.get("cpu", 1), max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False))
    try:
        return ray.get(task.remote(shared_ref, recipe=recipe,
                                   threads=max(1, int(resources.get("cpu", 1))),
                                   kwargs={**kwargs, "name": model_name}))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, _Err):
            raise type(cause)(cause.message, cause.hint) from None
        raise
