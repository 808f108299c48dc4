"""`edgeslim distill`: a big model (or several) teaches a small one; the student is saved."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("distill")
@click.option("--teacher", "teachers", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Teacher model (.keras, .h5, SavedModel); repeat for several teachers.")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help=".npz (x_train, y_train[, ...]) or an image folder with class sub-folders.")
@click.option("--student", type=click.Path(path_type=Path),
              help="Student model to train (else give --width to derive one from the teacher).")
@click.option("--width", type=float,
              help="Derive the student from the (first) teacher with this fraction of filters/units.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path),
              help="Where to save the distilled student (.keras or .h5).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Make the run reproducible (0 to 2**32 - 1).")
@click.option("--temperature", "-T", type=float, default=2.0, show_default=True,
              help="Softmax temperature of the soft targets.")
@click.option("--alpha", type=float, default=0.5, show_default=True,
              help="Weight of the label loss; 1 - alpha goes to the teacher's soft targets.")
@click.option("--epochs", type=int,
              help="Training budget in passes over the training data (default: derived from the "
                   "data size, see --steps).")
@click.option("--steps", type=int,
              help="Training budget in optimizer steps (default: 40 passes over the data, at least "
                   "1500 steps).")
@click.option("--init", type=click.Choice(["teacher", "random"]), default="teacher", show_default=True,
              help="With --width: start the student from the teacher's most important channels, or "
                   "from fresh random weights.")
@click.option("--hint", "hints", multiple=True,
              help="Feature hint TEACHER_LAYER:STUDENT_LAYER (repeatable).")
@click.option("--hint-weight", type=float, default=1.0, show_default=True,
              help="Weight of the feature-hint losses.")
@click.option("--teacher-weight", "teacher_weights", type=float, multiple=True,
              help="Weight of each teacher's soft targets, in --teacher order (default: mean).")
@click.option("--no-scratch", is_flag=True,
              help="Skip training the same student from scratch for comparison (faster).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--patience", type=int, default=2, show_default=True,
              help="Stop after this many validations without a better metric (only once the "
                   "student is clear of chance, and not in the first half of the budget).")
@click.option("--trust-model", is_flag=True,
              help="Allow loading models with Lambda layers or custom objects (runs code from the file).")
def command(teachers, data, student, width, out, seed, temperature, alpha, epochs, steps, init, hints,
            hint_weight, teacher_weights, no_scratch, batch_size, learning_rate, patience,
            trust_model):
    """Distil one or more TEACHER models into a smaller student and save it to OUT."""
    from edgeslim.io.outputs import check_output_file

    # Before any training: the student's file can be written and is none of the inputs.
    check_output_file(out, inputs=(*teachers, data, student))

    from edgeslim.compress.distill import distill_model

    outcome = distill_model(
        list(teachers), data, student=student, width=width, out=out, seed=seed,
        temperature=temperature, alpha=alpha, epochs=epochs, steps=steps, init=init,
        hints=tuple(hints),
        hint_weight=hint_weight, teacher_weights=tuple(teacher_weights),
        compare_scratch=not no_scratch, batch_size=batch_size, learning_rate=learning_rate,
        patience=patience, trust_model=trust_model, log=click.echo,
    )
    i = outcome.info
    m = i["metric"]
    if i.get("student_failed"):
        click.echo(f"FAILED: {i['failure']}", err=True)
    click.echo(f"teacher {m}: " + ", ".join(f"{v:.4f}" for v in i["teacher_metrics"])
               + f"  ({', '.join(str(p) for p in i['teacher_params'])} parameters)")
    if i["scratch_metric"] is not None:
        click.echo(f"student from scratch {m}: {i['scratch_metric']:.4f}")
    click.echo(f"distilled student {m}: {i['distilled_metric']:.4f}  ({i['student_params']} parameters)")
    click.echo(i["summary"])
    click.echo(f"student saved to {out}")
