"""``python -m img_search.search.build``: the build command (``img_search.cli.build``)."""

from img_search.cli.build import main

if __name__ == "__main__":
    main()
