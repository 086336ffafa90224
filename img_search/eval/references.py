"""Published numbers of known checkpoints, shown next to ours in ``report.md``, each with its source.

Only numbers copied from their source and checked against it are listed;
a checkpoint is matched by the Hub id recorded in the table (the encoder's
``checkpoint``). Units are the ones ``img-search evaluate`` reports for the
same metric, so a reference sits in the same row as our value.

Comparability is the reader's to judge, and the notes say what differs:
open_clip's Flickr30k numbers are on the 1,000-image Karpathy test split
(CLIP_benchmark), while ``datasets=flickr30k`` is every image of
lmms-lab/flickr30k unless ``datasets.flickr30k.ids_file`` restricts it.

INQUIRE-Rerank AP from the INQUIRE paper is not listed: its table could not
be checked from here, and a number not checked is not shipped. A user who
has the paper gives its numbers to ``img-search report references=<csv>``
(``read_references``); they are shown like these, under the source the file
names. To ship one, add a ``Reference`` to ``REFERENCES`` (and its ``Source``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from img_search.eval.csv_files import CsvFileError, MissingColumns, read_csv_rows


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


SOURCES = {
    "open_clip": Source(
        name="open_clip, docs/openclip_retrieval_results.csv",
        url="https://github.com/mlfoundations/open_clip/blob/main/docs/openclip_retrieval_results.csv",
        note="CLIP_benchmark zero-shot retrieval on the Flickr30k 1k test split (Karpathy); its "
        "'Flickr image retr. R@1' is text → image, 'Flickr text retr. R@1' image → text",
    ),
    "inquire": Source(
        name="INQUIRE: A Natural World Text-to-Image Retrieval Benchmark (Vendrow et al., NeurIPS 2024)",
        url="https://arxiv.org/abs/2411.02537",
        note="no value shipped: the paper's Rerank table was not checked here; give its numbers "
        "with references=<csv>",
    ),
}

#: Each value checked against its source (open_clip's CSV at commit 05e7db4).
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
)


def reference_for(
    checkpoint: str | None,
    task: str,
    metric: str,
    split: str = "",
    references: Iterable[Reference] = REFERENCES,
) -> Reference | None:
    """The published value of ``metric`` of ``task`` (and ``split``) for this checkpoint, if listed
    (the first of ``references`` that matches)."""
    wanted = (checkpoint, task, metric, split)
    for reference in references:
        if (reference.checkpoint, reference.task, reference.metric, reference.split) == wanted:
            return reference
    return None


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
    try:
        rows = read_csv_rows(where, FILE_COLUMNS)
    except FileNotFoundError:
        raise ValueError(f"references={where}: no such file") from None
    except MissingColumns as exc:
        raise ValueError(
            f"references={where}: no column {', '.join(exc.missing)}; the header is "
            f"{','.join(FILE_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]"
        ) from None
    except CsvFileError as exc:
        raise ValueError(f"references={where} line {exc.line}: {exc.reason}") from None
    urls: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    references = []
    for row in rows:
        fields = {k: row.get(k, "").strip() for k in (*FILE_COLUMNS, *OPTIONAL_COLUMNS)}
        at = f"references={where} line {row.line}"
        if fields["task"] not in tasks:
            raise ValueError(
                f"{at}: unknown task {fields['task']!r}; choose among {', '.join(tasks)}"
            )
        try:
            value = float(fields["value"])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{at}: value {fields['value']!r} is not a number")
        name = fields["source"]
        if urls.setdefault(name, fields["url"]) != fields["url"]:
            raise ValueError(
                f"{at}: source {name!r} has two urls ({urls[name]}, {fields['url']}); "
                "give each its own name"
            )
        said = notes.setdefault(name, [])
        if fields["note"] and fields["note"] not in said:
            said.append(fields["note"])
        references.append(
            Reference(
                fields["checkpoint"],
                fields["task"],
                fields["metric"],
                value,
                name,
                fields["as_named"],
                fields["split"],
            )
        )
    sources = {
        name: Source(name, url, "; ".join([f"given in {where}, not checked here", *notes[name]]))
        for name, url in urls.items()
    }
    return sources, tuple(references)
