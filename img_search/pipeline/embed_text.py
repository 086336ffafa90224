"""``python -m img_search.pipeline.embed_text``: the caption pipeline's command (``img_search.cli.embed_text``)."""

from img_search.cli.embed_text import main

if __name__ == "__main__":
    main()
