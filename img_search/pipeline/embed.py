"""``python -m img_search.pipeline.embed``: the image pipeline's command (``img_search.cli.embed``)."""

from img_search.cli.embed import main

if __name__ == "__main__":
    main()
