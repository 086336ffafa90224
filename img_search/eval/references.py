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
be checked from here, and a number not checked is not shipped. Add a
``Reference`` to ``REFERENCES`` (and its ``Source``) to show one.
"""

from __future__ import annotations

from dataclasses import dataclass


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
        note="no value listed: the paper's Rerank table was not checked here",
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
    checkpoint: str | None, task: str, metric: str, split: str = ""
) -> Reference | None:
    """The published value of ``metric`` of ``task`` (and ``split``) for this checkpoint, if listed."""
    wanted = (checkpoint, task, metric, split)
    for reference in REFERENCES:
        if (reference.checkpoint, reference.task, reference.metric, reference.split) == wanted:
            return reference
    return None
