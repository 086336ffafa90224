"""``python -m img_search.search.evaluate``: the evaluate command (``img_search.cli.evaluate``)."""

from img_search.cli.evaluate import main

if __name__ == "__main__":
    main()
