"""One (model, dataset) pair of a real job, opened in this process as a launch would open it:
the ``simulated`` encoder over an image folder, a joined ledger, the dataset built and listed."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from img_search.data.base import BuildContext
from img_search.embedding import Encoder
from img_search.pipeline.plan import Job
from img_search.pipeline.state.ledger import Ledger

SAMPLE_PHOTOS = Path(__file__).resolve().parents[2] / "img_search" / "samples" / "photos"


@dataclass
class OnePair:
    job: Job
    accelerator: Any
    encoder: Encoder
    source: Any
    ledger: Ledger
    layout: tuple[int, int]  # (shard size, tail unit)

    def run(self, progress: Any) -> Any:
        """The ``launch.Run`` of this process alone (slot 0 of 1, its loader workers as set)."""
        from img_search.pipeline.launch import Place, Run

        workers = self.job.settings.loader_workers("cpu", 1, self.job.modality.cpu_heavy_prepare)
        return Run(
            job=self.job,
            place=Place(),
            accelerator=self.accelerator,
            ledger=self.ledger,
            opening=None,  # type: ignore[arg-type]  # a pass never reads it
            slot=(0, 1),
            cores=1.0,
            loader_workers=workers,
            progress=progress,
        )


def nine_photos(folder: Path) -> Path:
    """The 8 sample photos and a copy of one under another name: 9 items."""
    folder.mkdir(parents=True)
    for photo in sorted(SAMPLE_PHOTOS.iterdir()):
        shutil.copy(photo, folder / photo.name)
    shutil.copy(SAMPLE_PHOTOS / "coffee.jpg", folder / "coffee-again.jpg")
    return folder


def open_pair(tmp_path: Path, photos: Path, *overrides: str, shard_size: int = 4) -> OnePair:
    from img_search.api.jobs import compose
    from img_search.pipeline.distributed import make_accelerator
    from img_search.pipeline.modalities import IMAGES, image_dataset_specs
    from img_search.pipeline.plan import plan_job

    cfg = compose(
        "embed_config",
        [
            "models=simulated",
            "models.simulated.batch_seconds=0",
            "datasets=image_folder",
            f"datasets.image_folder.path={photos}",
            f"output_path={tmp_path / 'out.parquet'}",
            "tasks.batch_size=2",
            *overrides,
        ],
    )
    job = plan_job(cfg, IMAGES, image_dataset_specs(cfg))
    accelerator = make_accelerator(cpu=True)
    ledger = Ledger(job.layout.state_dir, job.settings.lease_s)
    ledger.join("spec", "launch", rank=0)
    [source] = job.sources.values()
    source.context = BuildContext(ledger.path("built", source.name))
    source.build()
    [encoder] = job.encoders.values()
    encoder.load(accelerator.device, job.settings.precision, False)
    layout = (shard_size, job.settings.batch_size)
    return OnePair(job, accelerator, encoder, source, ledger, layout)
