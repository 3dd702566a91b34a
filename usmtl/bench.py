"""``usmtl bench``: images per second of the input pipeline, the training step and
prediction, with peak memory, as a table and as JSON.

Why: the paper's protocol is tens of millions of image-steps; whether a run takes minutes
or hours depends on the slowest of the input pipeline and the training step, and the only
way to know which is to measure both on the machine at hand.

- :func:`bench_pipeline`: a plain per-image loop (PIL decode, RoI crop, resize: what a user
  would write), the ``tf.data`` pipeline's first epoch (decode and crop, filling the cache)
  and its later epochs (cached crops; also with the augmentation layer applied, as a CPU
  training step would).
- :func:`bench_train`: the training step of the project's model on synthetic uint8 data,
  compiled as ``usmtl fit`` compiles it (same losses, hinge, optimizer), on TensorFlow
  (the loop of :mod:`usmtl.training.loop`) or JAX (Keras' JAX trainer). The JAX path
  imports no TensorFlow, so it runs on machines that only have JAX.
- :func:`bench_predict`: batched throughput and single-image latency of a run's Keras
  model, and of a SavedModel, a TFLite file or a model of any format registered in
  :mod:`usmtl.formats` (opened by its loader, timed as the format says).

Warm-up (tracing, compilation, cache filling where it is not what is measured) is never
timed. Every result carries ``memory``: the peak resident set of this process (host) and
the device's peak allocation where the backend reports it.

Example:
    >>> from usmtl.bench import bench_train, format_result
    >>> result = bench_train(backend="tensorflow", steps=10)  # doctest: +SKIP
    >>> print(format_result(result))  # doctest: +SKIP
    >>> python -m usmtl.bench train '{"backend": "jax", "image_size": 256}' out.json  # doctest: +SKIP

Nothing here imports TensorFlow at module level.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from usmtl.errors import UsmtlError

DEFAULT_CONFIG = "quickstart"  # a preset (usmtl.presets), there in a wheel too


# ---------------------------------------------------------------------------------------
# Memory, machine, output
# ---------------------------------------------------------------------------------------


def peak_memory() -> dict:
    """``{"host_peak_rss_mb", "device": {...} or None}``: this process's peak resident set
    and, where the Keras backend's runtime reports it, the first accelerator's peak bytes."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = rss / 1024 / 1024 if sys.platform == "darwin" else rss / 1024
    return {"host_peak_rss_mb": round(rss_mb, 1), "device": _device_memory()}


def _device_memory():
    if "jax" in sys.modules:
        try:
            import jax

            device = jax.local_devices()[0]
            stats = device.memory_stats() if device.platform != "cpu" else None
            if stats:
                return {"device": str(device), "peak_mb": round(stats.get("peak_bytes_in_use", 0) / 2**20, 1),
                        "in_use_mb": round(stats.get("bytes_in_use", 0) / 2**20, 1),
                        "limit_mb": round(stats.get("bytes_limit", 0) / 2**20, 1)}
        except Exception:  # a benchmark never fails for want of a memory figure
            pass
    if "tensorflow" in sys.modules:
        try:
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                info = tf.config.experimental.get_memory_info("GPU:0")
                return {"device": "GPU:0", "peak_mb": round(info["peak"] / 2**20, 1),
                        "in_use_mb": round(info["current"] / 2**20, 1)}
        except Exception:
            pass
    return None


def machine() -> dict:
    """Where a figure was measured."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    if "keras" in sys.modules:
        import keras

        info["keras"] = keras.__version__
        info["keras_backend"] = keras.backend.backend()
    if "jax" in sys.modules:
        import jax

        info["jax"] = jax.__version__
        info["devices"] = [str(d) for d in jax.devices()]
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info.setdefault("devices", [d.name for d in tf.config.list_logical_devices()])
    return info


def write_json(result: dict, path: str | None) -> None:
    if path:
        from usmtl.run import write_json_atomic

        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        write_json_atomic(path, result)


def format_result(result: dict) -> str:
    """A result's ``rows`` as a fixed-width table, then its memory line."""
    rows = result.get("rows", [])
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
              for r in text]
    memory = result.get("memory", {})
    device = memory.get("device")
    lines.append(f"peak host RSS: {memory.get('host_peak_rss_mb', '?')} MiB; device memory: "
                 + (f"peak {device['peak_mb']} MiB on {device['device']}" if device else "not reported"))
    for note in result.get("notes", []):
        lines.append(note)
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def _load_cfg(config_path: str | None, overrides=()):
    from usmtl.config import load_config

    return load_config(config_path or DEFAULT_CONFIG, list(overrides))


# ---------------------------------------------------------------------------------------
# Input pipeline
# ---------------------------------------------------------------------------------------


def plain_loop_roi(path: str, box, margin: float, square: bool, size: int) -> np.ndarray:
    """What a user would write without a pipeline: decode one file with Pillow, cut the RoI
    window (zero padded), resize with Pillow, return a uint8 array."""
    from PIL import Image

    from usmtl.data.roi import roi_window

    x0, y0, x1, y1 = roi_window(box, margin, square)
    with Image.open(path) as image:
        crop = image.convert("RGB").crop((x0, y0, x1, y1))  # pads outside with black
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def bench_pipeline(manifest: str | None = None, config_path: str | None = None, overrides=(),
                   limit: int | None = None, epochs: int = 3, batch_size: int | None = None,
                   cache: str | None = None, workdir: str | None = None) -> dict:
    """Images per second of the plain loop, the pipeline's first (cold) epoch and its cached
    epochs, on a manifest (default: 150 synthetic phantom patients in a temporary folder).

    ``cache`` overrides ``data.cache`` (``auto``, ``memory``, ``disk``); a file cache goes in
    ``workdir`` (default: a temporary folder). ``epochs`` cached epochs are timed."""
    cfg = _load_cfg(config_path, overrides)
    with tempfile.TemporaryDirectory(prefix="usmtl-bench-") as tmp:
        workdir = workdir or tmp
        if manifest is None:
            from usmtl.data.phantoms import make_phantoms

            manifest = os.path.join(workdir, "phantoms", "manifest.csv")
            make_phantoms(os.path.dirname(manifest), n_patients=150, size=256, seed=0,
                          progress=False)
        return _bench_pipeline(cfg, manifest, limit, epochs, batch_size or cfg.train.batch_size,
                               cache or cfg.data.cache, workdir)


def _bench_pipeline(cfg, manifest_path, limit, epochs, batch, cache, workdir) -> dict:
    from usmtl.data.crops import Crops
    from usmtl.data.manifest import read_manifest
    from usmtl.data.pipeline import cache_bytes, make_dataset, resolve_cache

    manifest = read_manifest(manifest_path)
    paths, boxes = manifest.image_paths(), manifest.boxes()
    if limit:
        paths, boxes = paths[:limit], boxes[:limit]
    n, size, data = len(paths), cfg.data.image_size, cfg.data
    if n == 0:
        raise UsmtlError(f"No images to benchmark. Received: {manifest_path} (limit {limit})")
    labels = {t.name: np.zeros(n, np.float32) for t in cfg.tasks}
    crops = Crops.from_manifest(manifest, range(n), data)  # image files, or a packed file's
    rows = []

    started = time.perf_counter()
    if manifest.pack is None:
        for path, box in zip(paths, boxes):
            plain_loop_roi(path, box, data.roi_margin, data.square_roi, size)
        stage = "plain loop (PIL decode + crop + resize, every epoch)"
    else:  # a pack holds crops: the plain loop decodes them
        for i in range(n):
            crops.read(i)
        stage = "plain loop (decode the packed crops, every epoch)"
    plain = n / (time.perf_counter() - started)
    rows.append({"stage": stage, "images_per_s": plain, "vs_plain": 1.0})

    import tensorflow as tf

    from usmtl.model.augment import RoiAugment

    data.cache = cache
    where = resolve_cache(cache, n, size, os.path.join(workdir, "cache"), "bench")
    dataset = make_dataset(None, None, labels, data, batch, training=True, seed=0,
                           cache_dir=os.path.join(workdir, "cache"), name="bench", crops=crops)

    def one_epoch(augment=None, count=None):
        delivered, began = 0, time.perf_counter()
        for x, _, _ in dataset:
            if augment is not None:
                x = augment(x)
            delivered += int(x.shape[0])
        _ = x.numpy()[0, 0, 0]
        return (count or delivered) / (time.perf_counter() - began)

    cold = one_epoch(count=n)  # the first epoch decodes all n images (full shuffle buffer)
    rows.append({"stage": f"pipeline, first epoch (decode + crop, fills the {where if where in ('memory', 'none') else 'file'} cache)",
                 "images_per_s": cold, "vs_plain": cold / plain})
    one_epoch()  # warm the shuffle and prefetch buffers
    cached = statistics.median(one_epoch() for _ in range(max(1, epochs)))
    rows.append({"stage": "pipeline, cached epochs (shuffle + batch, uint8)",
                 "images_per_s": cached, "vs_plain": cached / plain})
    layer = RoiAugment.from_augment_config(data.augment, seed=0)
    augment = tf.function(lambda x: layer(x, training=True), reduce_retracing=True)
    one_epoch(augment)  # trace
    augmented = statistics.median(one_epoch(augment) for _ in range(max(1, epochs)))
    rows.append({"stage": "pipeline, cached + RoiAugment on this CPU (what a CPU step adds)",
                 "images_per_s": augmented, "vs_plain": augmented / plain})
    return {
        "benchmark": "pipeline", "manifest": os.path.abspath(manifest_path), "images": n,
        "image_size": size, "batch_size": batch, "cache": where,
        "cache_mb": round(cache_bytes(n, size) / 2**20, 1), "rows": rows,
        "plain_loop_images_per_s": plain, "cold_images_per_s": cold,
        "cached_images_per_s": cached, "cached_augmented_images_per_s": augmented,
        "cached_vs_plain": cached / plain, "cached_augmented_vs_plain": augmented / plain,
        "memory": peak_memory(), "machine": machine(),
    }


# ---------------------------------------------------------------------------------------
# Training step
# ---------------------------------------------------------------------------------------


def _run_in_subprocess(kind: str, kwargs: dict) -> dict:
    """Run a benchmark in a fresh interpreter (another Keras backend than this one's)."""
    env = {**os.environ, "KERAS_BACKEND": kwargs.get("backend", "tensorflow"),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        proc = subprocess.run([sys.executable, "-m", "usmtl.bench", kind, json.dumps(kwargs), out],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.isfile(out):
            raise UsmtlError(f"The {kind} benchmark failed in its subprocess "
                             f"(KERAS_BACKEND={env['KERAS_BACKEND']}):\n{proc.stderr[-3000:]}")
        with open(out) as f:
            return json.load(f)


def bench_train(backend: str | None = None, config_path: str | None = None, overrides=(),
                image_size: int | None = None, batch_size: int | None = None,
                backbone: str | None = None, precision: str = "auto", jit="auto",
                steps_per_execution: int = 1, steps: int = 50, warmup: int = 5,
                augment: bool | None = None, data_on_device: bool = False,
                profile_dir: str | None = None) -> dict:
    """Training images per second of the project's model on synthetic uint8 images.

    The model is ``build_model`` of the config (default: the quickstart's) with the given
    overrides, pretrained weights off (speed does not depend on them), compiled by
    :func:`usmtl.training.compile.compile_for_training`. ``backend`` is the Keras backend
    (default: ``KERAS_BACKEND`` or tensorflow); when Keras was already imported with another
    one, the benchmark runs in a subprocess. ``warmup`` steps (at least one call of the
    compiled function) are not timed. ``data_on_device`` (JAX only): the batch is put on the
    accelerator once and Keras' jitted train step is called on it directly, as synthetic
    benchmarks of other frameworks do; otherwise batches come from host memory through
    ``model.fit`` (JAX) or ``tf.data`` (TensorFlow), as in training. ``profile_dir`` (JAX
    with ``data_on_device``): after the timed steps, a few more run under
    ``jax.profiler.trace`` into that folder (with a Perfetto JSON trace), never timed.
    """
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in ("tensorflow", "jax"):
        raise UsmtlError(f"--backend must be tensorflow or jax. Received: {backend!r}")
    kwargs = dict(backend=backend, config_path=config_path, overrides=list(overrides),
                  image_size=image_size, batch_size=batch_size, backbone=backbone,
                  precision=precision, jit=jit, steps_per_execution=steps_per_execution,
                  steps=steps, warmup=warmup, augment=augment, data_on_device=data_on_device,
                  profile_dir=profile_dir)
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            return _run_in_subprocess("train", kwargs)
    else:
        os.environ["KERAS_BACKEND"] = backend
    import keras

    if keras.backend.backend() != backend:  # KERAS_BACKEND was overridden by keras.json?
        return _run_in_subprocess("train", kwargs)
    return _bench_train(**kwargs)


def _train_config(config_path, overrides, image_size, batch_size, backbone, augment):
    overrides = list(overrides)
    if image_size:
        overrides.append(f"data.image_size={int(image_size)}")
    if batch_size:
        overrides.append(f"train.batch_size={int(batch_size)}")
    if backbone:
        overrides.append(f"model.backbone={backbone}")
    if augment is not None:
        overrides.append(f"data.augment.enabled={'true' if augment else 'false'}")
    overrides.append("model.weights=none")
    return _load_cfg(config_path, overrides)


def _resolve_precision(precision: str, backend: str) -> str:
    if precision != "auto":
        return precision
    if backend == "jax":
        import jax

        # bfloat16 needs no loss scaling and is what current accelerators run fastest.
        return "mixed_bfloat16" if jax.devices()[0].platform != "cpu" else "float32"
    from usmtl.training.loop import resolve_precision

    return resolve_precision("auto")


def _bench_train(backend, config_path, overrides, image_size, batch_size, backbone, precision,
                 jit, steps_per_execution, steps, warmup, augment, data_on_device,
                 profile_dir=None) -> dict:
    import keras

    from usmtl.model.multitask import build_model
    from usmtl.model.precision import precision_policy
    from usmtl.training.compile import compile_for_training

    cfg = _train_config(config_path, overrides, image_size, batch_size, backbone, augment)
    size, batch = cfg.data.image_size, cfg.train.batch_size
    spe = max(1, int(steps_per_execution))
    warmup = max(spe, -(-max(1, int(warmup)) // spe) * spe)  # whole calls, at least one
    steps = max(spe, -(-max(1, int(steps)) // spe) * spe)
    precision = _resolve_precision(precision, backend)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    names = [t.name for t in cfg.tasks]
    y = {name: rng.integers(0, 2, (batch, 1)).astype(np.float32) for name in names}
    w = {name: np.ones((batch,), np.float32) for name in names}

    with precision_policy(precision):
        keras.utils.set_random_seed(0)
        if backend == "tensorflow":
            seconds, jit_used, strategy = _time_tensorflow(cfg, x, y, w, jit, spe, warmup, steps)
        else:
            model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=1000,
                                         jit_compile=True if jit == "auto" else bool(jit),
                                         steps_per_execution=spe)
            jit_used, strategy = bool(model.jit_compile), "none (single device)"
            if data_on_device:
                seconds = _time_jax_on_device(model, x, y, w, warmup, steps, profile_dir)
            else:
                seconds = _time_jax_fit(model, x, y, w, warmup, steps)
    rate = steps * batch / seconds
    row = {"backend": backend, "backbone": cfg.model.backbone, "image_size": size, "batch": batch,
           "precision": precision, "jit": jit_used, "steps/exec": spe,
           "input": "device" if data_on_device and backend == "jax" else "host",
           "augment": cfg.data.augment.enabled, "ms_per_step": 1000 * seconds / steps,
           "images_per_s": rate}
    return {"benchmark": "train", "backend": backend, "config": config_path or DEFAULT_CONFIG,
            "backbone": cfg.model.backbone, "image_size": size, "batch_size": batch,
            "precision": precision, "jit_compile": jit_used, "steps_per_execution": spe,
            "steps": steps, "warmup_steps": warmup, "strategy": strategy,
            "tasks": names, "hinge": bool(cfg.model.hinge), "augment": cfg.data.augment.enabled,
            "data_on_device": bool(data_on_device and backend == "jax"),
            "profile_dir": profile_dir if data_on_device and backend == "jax" else None,
            "seconds": seconds, "images_per_s": rate, "rows": [row],
            "memory": peak_memory(), "machine": machine()}


def _time_tensorflow(cfg, x, y, w, jit, spe, warmup, steps):
    """The loop of :mod:`usmtl.training.loop` on a repeated host batch (``tf.data``)."""
    import tensorflow as tf

    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training
    from usmtl.training.loop import (build_for_training, make_step_function, prepare_dataset,
                                     resolve_jit, resolve_strategy, strategy_name)

    strategy = resolve_strategy("auto")
    jit = resolve_jit(jit if isinstance(jit, bool) else "auto", strategy)
    with strategy.scope():
        model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=1000,
                                     jit_compile=jit, steps_per_execution=spe)
    dataset = tf.data.Dataset.from_tensors((x, y, w)).repeat().prefetch(tf.data.AUTOTUNE)
    with strategy.scope():
        build_for_training(model, dataset.element_spec)
    iterator = iter(prepare_dataset(dataset, strategy))
    run = make_step_function(model, strategy, jit)
    n = tf.constant(spe)
    for _ in range(warmup // spe):
        float(run(iterator, n)["loss"])
    started = time.perf_counter()
    for _ in range(steps // spe):
        logs = run(iterator, n)
    float(logs["loss"])  # waits for the last step
    return time.perf_counter() - started, bool(jit), strategy_name(strategy)


def _time_jax_fit(model, x, y, w, warmup, steps):
    """``model.fit`` (Keras' JAX trainer) on a repeated host batch; the clock starts once
    the warm-up steps have finished on the device and stops when the last one has."""
    import jax
    import keras

    class Clock(keras.callbacks.Callback):
        start = None

        def on_train_batch_end(self, batch, logs=None):
            if self.start is None and batch + 1 >= warmup:
                jax.block_until_ready(self.model._jax_state)
                self.start = time.perf_counter()

    def batches():
        while True:
            yield x, y, w

    clock = Clock()
    model.fit(batches(), steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[clock],
              shuffle=False)  # a generator cannot be shuffled; Keras warns otherwise
    jax.block_until_ready([v.value for v in model.variables])
    return time.perf_counter() - clock.start


def _time_jax_on_device(model, x, y, w, warmup, steps, profile_dir=None):
    """Keras' jitted JAX train step, called on a batch already on the accelerator; then,
    with ``profile_dir``, a few more calls profiled (not timed)."""
    import itertools

    import jax

    data = jax.device_put((x, y, w))
    model._symbolic_build(data_batch=(x, y, w))
    model.make_train_function()
    state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                 optimizer_variables=True, metrics_variables=True,
                                 purge_model_variables=True)
    batches = itertools.repeat(data)
    for _ in range(warmup // model.steps_per_execution):
        logs, state = model.train_function(state, batches)
    jax.block_until_ready(state)
    started = time.perf_counter()
    for _ in range(steps // model.steps_per_execution):
        logs, state = model.train_function(state, batches)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - started
    if profile_dir:
        try:
            with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
                for _ in range(max(1, 3 // model.steps_per_execution)):
                    logs, state = model.train_function(state, batches)
                jax.block_until_ready(state)
        except Exception as exc:  # the profile is extra: it never costs the figure
            print(f"warning: the profile failed ({type(exc).__name__}: {exc})", file=sys.stderr)
    model._jax_state_synced = False
    model._jax_state = dict(zip(("trainable_variables", "non_trainable_variables",
                                 "optimizer_variables", "metrics_variables"), state))
    model.jax_state_sync()
    return seconds


# ---------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------


def bench_predict(model_path: str | None = None, savedmodel: str | None = None,
                  tflite: str | None = None, batch_size: int = 32, batches: int = 10,
                  runs: int = 50, image_size: int | None = None, models=(),
                  trust_model: bool = False) -> dict:
    """Batched images/s and single-image latency (median ms) of each model given, on random
    uint8 images at the model's size: ``model_path`` (a run directory or ``.keras`` file),
    ``savedmodel``, ``tflite`` and ``models``, each any path :func:`usmtl.formats.open_model`
    opens (usmtl's side files optional). Each is timed as its format's
    :meth:`~usmtl.formats.Format.bench_plan` says (a ``.tflite``: batches through an
    interpreter resized to ``batch_size`` when the model allows it, single images through a
    batch-1 one). ``trust_model``: time a SavedModel whose graph reads or writes files
    (refused otherwise, :mod:`usmtl.formats.opcheck`)."""
    from usmtl.export.runtime import median_latency
    from usmtl.formats import open_model

    paths = [p for p in (model_path, savedmodel, tflite, *models) if p]
    if not paths:
        raise UsmtlError("bench predict needs a MODEL, --savedmodel or --tflite")
    opened = [open_model(p, require_side_files=False, trust=trust_model) for p in paths]
    for o in opened:
        o.format.vet(o.found, trust_model)  # bench_plan loads it: vet first
    plans = [o.format.bench_plan(o.found, batch_size) for o in opened]
    known = [p.batched.image_size for p in plans if p.batched.image_size]
    size = image_size or (known[0] if known else None)
    rng = np.random.default_rng(0)
    rows = []
    for path, plan in zip(paths, plans):
        side = image_size or plan.batched.image_size or size
        if side is None:
            raise UsmtlError(f"{path} takes any image size and nothing says which; pass "
                             f"--image-size. Received: {path}")
        x = rng.integers(0, 256, (plan.batch * batches, side, side, 3), dtype=np.uint8)
        batch, run = plan.batch, plan.batched.run
        ms, _ = median_latency(lambda: [run(x[i:i + batch]) for i in range(0, len(x), batch)],
                               max(1, runs // 10), warmup=2)
        latency = None if plan.single is None else median_latency(
            lambda: plan.single.run(x[:1]), runs, warmup=2)[0]
        rows.append({"model": plan.label, "batch": batch, "images_per_s": len(x) / (ms / 1000),
                     "single_image_ms": latency})
    return {"benchmark": "predict", "model": model_path, "savedmodel": savedmodel,
            "tflite": tflite, "models": paths, "formats": [o.format.name for o in opened],
            "image_size": size, "rows": rows, "memory": peak_memory(), "machine": machine()}


# ---------------------------------------------------------------------------------------
# python -m usmtl.bench KIND '{json kwargs}' OUT.json  (used to switch Keras backends)
# ---------------------------------------------------------------------------------------


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 3 or argv[0] not in ("train", "pipeline", "predict"):
        print("usage: python -m usmtl.bench train|pipeline|predict '{json kwargs}' out.json",
              file=sys.stderr)
        return 2
    kind, kwargs, out = argv[0], json.loads(argv[1]), argv[2]
    function = {"train": bench_train, "pipeline": bench_pipeline, "predict": bench_predict}[kind]
    result = function(**kwargs)
    write_json(result, out)
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
