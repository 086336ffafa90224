"""``python -m img_search.search.info``: the info command (``img_search.cli.info``)."""

from img_search.cli.info import main

if __name__ == "__main__":
    main()
