"""The error every loader raises for data it cannot use."""


class DataError(ValueError):
    """Data that cannot be loaded as asked: a corrupt or inconsistent file, a bad layout or argument.

    Raised before any training starts; the message names the file (and the
    field, row or argument) and how to fix it. A `ValueError`, so code that
    catches those keeps working.

    Example:

    ```python
    try:
        train, val, test, info = load_medmnist("pneumoniamnist", path="broken.npz")
    except DataError as e:
        print(e)  # "broken.npz is not a readable npz file (...); delete it and ..."
    ```
    """
