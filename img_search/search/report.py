"""``python -m img_search.search.report``: the report command (``img_search.cli.report``)."""

from img_search.cli.report import main

if __name__ == "__main__":
    main()
