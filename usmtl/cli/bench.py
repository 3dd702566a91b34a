"""``usmtl bench pipeline|train|predict``: throughput benchmarks over :mod:`usmtl.bench`."""

from __future__ import annotations

import click

from usmtl.cli import startup
from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import WholeSentenceGroup, config_option, set_option, trust_option


@click.group("bench", cls=WholeSentenceGroup)
def bench_group():
    """Throughput benchmarks with peak memory: input pipeline, training step, prediction.
    Each prints a table and, with --out, writes JSON."""


def _bench_report(result, out):
    from usmtl.bench import format_result, write_json

    click.echo(format_result(result))
    write_json(result, out)
    if out:
        click.echo(f"Wrote {out}")


_bench_out_option = click.option("--out", type=click.Path(dir_okay=False), help="JSON file to write.")


@bench_group.command("pipeline")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Manifest CSV (default: synthetic phantoms in a temporary folder).")
@config_option
@set_option
@click.option("--limit", type=int, help="Only the first N images of the manifest.")
@click.option("--epochs", default=3, show_default=True, help="Cached epochs timed (median).")
@click.option("--batch-size", type=int, help="Default: the config's train.batch_size.")
@click.option("--cache", type=click.Choice(["auto", "memory", "disk"]),
              help="Override data.cache (a file cache goes in a temporary folder).")
@_bench_out_option
@friendly_errors
def bench_pipeline_command(manifest, config_path, overrides, limit, epochs, batch_size, cache, out):
    """Images/s of a plain per-image Pillow loop against the tf.data pipeline: its first
    epoch (decode + RoI crop, filling the cache) and its cached epochs."""
    startup.quiet_tensorflow()
    from usmtl.bench import bench_pipeline

    _bench_report(bench_pipeline(manifest, config_path, overrides, limit, epochs, batch_size,
                                 cache), out)


@bench_group.command("train")
@click.option("--backend", type=click.Choice(["tensorflow", "jax"]),
              help="Keras backend (default: KERAS_BACKEND, else tensorflow). jax needs no TensorFlow.")
@config_option
@set_option
@click.option("--image-size", type=int, help="Default: the config's data.image_size.")
@click.option("--batch-size", type=int, help="Default: the config's train.batch_size.")
@click.option("--backbone", help="Default: the config's model.backbone.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]))
@click.option("--jit/--no-jit", default=None, help="XLA (default: train.jit_compile's auto rule; "
              "always on for JAX).")
@click.option("--steps-per-execution", default=1, show_default=True)
@click.option("--steps", default=50, show_default=True, help="Timed steps.")
@click.option("--warmup", default=5, show_default=True, help="Untimed steps first.")
@click.option("--augment/--no-augment", default=None, help="Default: the config's data.augment.enabled.")
@click.option("--data-on-device", is_flag=True,
              help="JAX: keep the batch on the accelerator and call the jitted step directly.")
@_bench_out_option
@friendly_errors
def bench_train_command(backend, config_path, overrides, image_size, batch_size, backbone,
                        precision, jit, steps_per_execution, steps, warmup, augment,
                        data_on_device, out):
    """Training images/s of the project's model (losses, hinge, optimizer as 'usmtl fit'
    compiles them) on synthetic uint8 images; warm-up excluded."""
    startup.quiet_tensorflow()
    from usmtl.bench import bench_train

    _bench_report(bench_train(backend, config_path, overrides, image_size, batch_size, backbone,
                              precision, "auto" if jit is None else jit, steps_per_execution,
                              steps, warmup, augment, data_on_device), out)


@bench_group.command("predict")
@click.argument("models", nargs=-1, type=click.Path(exists=True))
@click.option("--savedmodel", type=click.Path(exists=True, file_okay=False),
              help="A SavedModel folder (serving_default signature, uint8 input).")
@click.option("--tflite", type=click.Path(exists=True, dir_okay=False), help="A .tflite file.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--batches", default=10, show_default=True, help="Batches per timed pass.")
@click.option("--runs", default=50, show_default=True, help="Timed single-image calls.")
@click.option("--image-size", type=int, help="Needed only for a SavedModel of any input size "
              "without usmtl's side files or a Keras MODEL.")
@_bench_out_option
@trust_option
@friendly_errors
def bench_predict_command(models, savedmodel, tflite, batch_size, batches, runs, image_size, out,
                          trust_model):
    """Batched images/s and single-image latency of each MODEL: a run's Keras model (run
    directory or .keras file) or any model usmtl opens (a SavedModel, a .tflite file, an export
    of any registered format; usmtl's side files optional), each timed as its format says."""
    startup.quiet_tensorflow()
    from usmtl.bench import bench_predict

    _bench_report(bench_predict(models[0] if models else None, savedmodel, tflite, batch_size,
                                batches, runs, image_size, models=models[1:],
                                trust_model=trust_model), out)


COMMANDS = (bench_group,)
