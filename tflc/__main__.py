"""`python -m tflc` is the `tflc` command."""

from tflc.cli import main

if __name__ == "__main__":
    main()
