"""``python -m img_search.search.query``: the query command (``img_search.cli.query``)."""

from img_search.cli.query import main

if __name__ == "__main__":
    main()
