"""``python -m img_search.serve``: the search page and HTTP API (``img_search.cli.serve``)."""

from img_search.cli.serve import main

if __name__ == "__main__":
    main()
