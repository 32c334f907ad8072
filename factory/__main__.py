"""``python -m factory`` is the same as the ``factory`` command."""

from factory.cli import main

if __name__ == "__main__":
    main()
