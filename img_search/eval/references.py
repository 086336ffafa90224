"""Published numbers of known checkpoints, shown next to ours in ``report.md``, each with its source.

Only numbers copied from their source and checked against it are listed;
a checkpoint is matched by the Hub id recorded in the table (the encoder's
``checkpoint``: ``openai/clip-vit-base-patch32``, ``hf-hub:imageomics/bioclip``).
Units are the ones ``img-search evaluate`` reports for the same metric, so a
reference sits in the same row as our value, and only there: a reference
whose metric or split no row of ours has (INQUIRE's AP@50 against our AP@100)
is shown on a line of its own, under its own name (``report.published_apart``).

Comparability is the reader's to judge, and the notes say what differs:
open_clip's Flickr30k numbers are on the 1,000-image Karpathy test split
(CLIP_benchmark), while ``datasets=flickr30k`` is every image of
lmms-lab/flickr30k unless ``datasets.flickr30k.ids_file`` restricts it;
INQUIRE's leaderboards name no split.

A user who has other numbers (a paper's table) gives them to ``img-search
report references=<csv>`` (``read_references``); they are shown like these,
under the source the file names. To ship one, add a ``Reference`` to
``REFERENCES`` (and its ``Source``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from img_search.eval.csv_files import CsvFileError, CsvRow, MissingColumns, read_csv_rows


@dataclass(frozen=True)
class Source:
    name: str
    url: str
    note: str


@dataclass(frozen=True)
class Reference:
    checkpoint: str  # the Hub id recorded in the table
    task: str  # an img-search evaluate task
    metric: str  # the key that task reports
    value: float  # in that task's units
    source: str  # a key of SOURCES
    as_named: str  # what the source calls this model
    split: str = ""  # INQUIRE-Rerank: validation or test
    group: str = "all"  # a breakdown, as report rows name it: supercategory=Species


SOURCES = {
    "open_clip": Source(
        name="open_clip, docs/openclip_retrieval_results.csv",
        url="https://github.com/mlfoundations/open_clip/blob/main/docs/openclip_retrieval_results.csv",
        note="CLIP_benchmark zero-shot retrieval on the Flickr30k 1k test split (Karpathy); its "
        "'Flickr image retr. R@1' is text → image, 'Flickr text retr. R@1' image → text",
    ),
    "inquire": Source(
        name="INQUIRE leaderboards (inquire-benchmark.github.io, app/page.js of "
        "inquire-benchmark/inquire-benchmark.github.io)",
        url="https://inquire-benchmark.github.io/",
        note="The Fullrank and Rerank leaderboards of the INQUIRE project page, whose tables "
        "have not changed since June 2024; the page reports AP@50 ('the average precision among "
        "the top 50 retrieved images') and names no split (the INQUIRE repository's commands "
        "run --split test). Fullrank AP@50 is task=inquire_fullrank's AP@50 at "
        "inquire_fullrank.k=50 (at another k it stands on a line of its own); Rerank's is shown "
        "apart under the page's name AP@50, since INQUIRE's eval_rerank_with_clip.py computes "
        "AP over all 100 candidates (our AP) while our rerank_AP@50 cuts at the top 50",
    ),
}

#: INQUIRE's leaderboards (app/page.js), AP@50: checkpoint → (the page's name, Fullrank overall
#: and by supercategory, Rerank overall). The page's model → checkpoint: INQUIRE's code
#: (src/utils.py) loads "BioCLIP" as hf-hub:imageomics/bioclip, "CLIP ViT-B/32 (OpenAI)" as
#: hf_clip:openai/clip-vit-base-patch32 and "CLIP ViT-H/14-378 (DFN)" as
#: open_clip:ViT-H-14-378-quickgelu/dfn5b, whose weights open_clip takes from
#: apple/DFN5B-CLIP-ViT-H-14-378.
INQUIRE_SUPERCATEGORIES = ("Appearance", "Behavior", "Context", "Species")
INQUIRE_LEADERBOARDS = {
    "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378": (
        "CLIP ViT-H/14-378 (DFN)",
        (35.6, 25.7, 38.7, 36.5, 52.7),
        44.6,
    ),
    "openai/clip-vit-base-patch32": ("CLIP ViT-B/32 (OpenAI)", (8.2, 5.8, 7.6, 8.9, 16.1), 31.3),
    "hf-hub:imageomics/bioclip": ("BioCLIP", (3.6, 2.3, 0.5, 2.2, 21.1), 28.9),
}


def inquire_references() -> tuple[Reference, ...]:
    """The leaderboard rows as references: Fullrank AP@50 overall and per supercategory, Rerank AP@50."""
    references = []
    for checkpoint, (as_named, fullrank, rerank) in INQUIRE_LEADERBOARDS.items():
        groups = ("all", *(f"supercategory={name}" for name in INQUIRE_SUPERCATEGORIES))
        for group, value in zip(groups, fullrank, strict=True):
            references.append(
                Reference(
                    checkpoint, "inquire_fullrank", "AP@50", value, "inquire", as_named, "", group
                )
            )
        references.append(Reference(checkpoint, "inquire", "AP@50", rerank, "inquire", as_named))
    return tuple(references)


#: Each value checked against its source: open_clip's CSV at commit 05e7db4 (f862f86 for DFN,
#: which 05e7db4 does not list; the LAION ViT-B-32 row is the same in both), INQUIRE's page.js
#: at commit 8cdfa80.
REFERENCES = (
    # open_clip "ViT-B-32, openai": the OpenAI weights that openai/clip-vit-base-patch32 converts
    Reference(
        "openai/clip-vit-base-patch32",
        "retrieval",
        "text_to_image_R@1",
        0.5878,
        "open_clip",
        "ViT-B-32 (openai)",
    ),
    Reference(
        "openai/clip-vit-base-patch32",
        "retrieval",
        "image_to_text_R@1",
        0.7890,
        "open_clip",
        "ViT-B-32 (openai)",
    ),
    # open_clip "ViT-B-16-SigLIP, webli": big_vision's B/16 224 WebLI checkpoint, which
    # google/siglip-base-patch16-224 converts too
    Reference(
        "google/siglip-base-patch16-224",
        "retrieval",
        "text_to_image_R@1",
        0.7468,
        "open_clip",
        "ViT-B-16-SigLIP (webli)",
    ),
    Reference(
        "google/siglip-base-patch16-224",
        "retrieval",
        "image_to_text_R@1",
        0.8910,
        "open_clip",
        "ViT-B-16-SigLIP (webli)",
    ),
    # open_clip "ViT-B-32, laion2b_s34b_b79k": its weights are laion/CLIP-ViT-B-32-laion2B-s34B-b79K
    Reference(
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "retrieval",
        "text_to_image_R@1",
        0.6678,
        "open_clip",
        "ViT-B-32 (laion2b_s34b_b79k)",
    ),
    Reference(
        "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        "retrieval",
        "image_to_text_R@1",
        0.8410,
        "open_clip",
        "ViT-B-32 (laion2b_s34b_b79k)",
    ),
    # open_clip "ViT-H-14-378-quickgelu, dfn5b": its weights are apple/DFN5B-CLIP-ViT-H-14-378
    Reference(
        "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378",
        "retrieval",
        "text_to_image_R@1",
        0.8202,
        "open_clip",
        "ViT-H-14-378-quickgelu (dfn5b)",
    ),
    Reference(
        "hf-hub:apple/DFN5B-CLIP-ViT-H-14-378",
        "retrieval",
        "image_to_text_R@1",
        0.9400,
        "open_clip",
        "ViT-H-14-378-quickgelu (dfn5b)",
    ),
    *inquire_references(),
)


def reference_for(
    checkpoint: str | None,
    task: str,
    metric: str,
    split: str = "",
    references: Iterable[Reference] = REFERENCES,
    group: str = "all",
) -> Reference | None:
    """The published value of ``metric`` of ``task`` (and ``split``, ``group``) for this checkpoint,
    if listed (the first of ``references`` that matches)."""
    wanted = (checkpoint, task, metric, split, group)
    for reference in references:
        if reference_key(reference) == wanted:
            return reference
    return None


def published_apart(
    checkpoint: str | None,
    tasks: Collection[str],
    ours: Collection[tuple[str, str, str, str]],
    references: Iterable[Reference] = REFERENCES,
) -> list[Reference]:
    """The overall published numbers of ``checkpoint`` for ``tasks`` whose (task, metric, split,
    group) is none of ``ours``: a metric at another k (INQUIRE's AP@50 against our AP@100) or a
    split the source does not name. They go on a line of their own, under the source's own
    metric name, never next to a different number; the first for a key, as in reference_for."""
    apart: dict[tuple[str, str, str, str], Reference] = {}
    for reference in references:
        key = reference_key(reference)[1:]
        if (
            reference.checkpoint == checkpoint
            and reference.task in tasks
            and reference.group == "all"
            and key not in ours
        ):
            apart.setdefault(key, reference)
    return list(apart.values())


def reference_key(reference: Reference) -> tuple[str, str, str, str, str]:
    """What a reference is matched by: checkpoint, task, metric, split and group."""
    r = reference
    return (r.checkpoint, r.task, r.metric, r.split, r.group)


#: The columns of a references file; ``split`` (INQUIRE: validation / test) and ``note`` may be absent.
FILE_COLUMNS = ("checkpoint", "task", "metric", "value", "source", "url", "as_named")
OPTIONAL_COLUMNS = ("split", "note")


def read_references(
    path: str | os.PathLike[str], tasks: Collection[str]
) -> tuple[dict[str, Source], tuple[Reference, ...]]:
    """Published numbers a user copied from a paper into a CSV, one line per checkpoint × metric.

    Values are in the units ``img-search evaluate`` reports for that metric
    (R@K as fractions, INQUIRE AP ×100), so they sit in the row of our value.
    Each ``source`` becomes a source of its own in ``report.md``, with the
    file named as where it came from: the numbers are the user's, not checked
    here. A malformed line is one error naming the file and the line.
    """
    where = os.fspath(path)
    urls: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    references = []
    for row in _reference_rows(where):
        fields = {k: row.get(k, "").strip() for k in (*FILE_COLUMNS, *OPTIONAL_COLUMNS)}
        at = f"references={where} line {row.line}"
        reference = _reference_of(fields, at, tasks)
        name = reference.source
        if urls.setdefault(name, fields["url"]) != fields["url"]:
            raise ValueError(
                f"{at}: source {name!r} has two urls ({urls[name]}, {fields['url']}); "
                "give each its own name"
            )
        said = notes.setdefault(name, [])
        if fields["note"] and fields["note"] not in said:
            said.append(fields["note"])
        references.append(reference)
    sources = {
        name: Source(name, url, "; ".join([f"given in {where}, not checked here", *notes[name]]))
        for name, url in urls.items()
    }
    return sources, tuple(references)


def _reference_rows(where: str) -> list[CsvRow]:
    """The lines of a references file; a missing file, column or malformed line as one error."""
    try:
        return read_csv_rows(where, FILE_COLUMNS)
    except FileNotFoundError:
        raise ValueError(f"references={where}: no such file") from None
    except MissingColumns as exc:
        raise ValueError(
            f"references={where}: no column {', '.join(exc.missing)}; the header is "
            f"{','.join(FILE_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]"
        ) from None
    except CsvFileError as exc:
        raise ValueError(f"references={where} line {exc.line}: {exc.reason}") from None


def _reference_of(fields: dict[str, str], at: str, tasks: Collection[str]) -> Reference:
    """One line's reference: a known task and a finite value, else an error saying where."""
    if fields["task"] not in tasks:
        raise ValueError(f"{at}: unknown task {fields['task']!r}; choose among {', '.join(tasks)}")
    try:
        value = float(fields["value"])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{at}: value {fields['value']!r} is not a number")
    return Reference(
        fields["checkpoint"],
        fields["task"],
        fields["metric"],
        value,
        fields["source"],
        fields["as_named"],
        fields["split"],
    )
