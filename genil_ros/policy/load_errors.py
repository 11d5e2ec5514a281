"""One line for an error from ``torch.load(..., weights_only=True)``.

PyTorch's refusal of a pickle runs to several lines and suggests retrying with ``weights_only=False``,
which would execute whatever the file contains. The project never loads untrusted pickles that way, so
its messages say what was refused and never pass that advice on.
"""

from __future__ import annotations

__all__ = ["load_error_reason"]


def load_error_reason(e: BaseException) -> str:
    """``e`` (raised by ``torch.load``) as one line without PyTorch's advice to disable ``weights_only``."""
    text = str(e)
    if type(e).__name__ == "UnpicklingError" or "weights_only" in text:
        details = [ln.strip() for ln in text.splitlines()
                   if ln.strip() and "weights_only" not in ln and not ln.startswith("Check the documentation")]
        detail = details[0].split(". ")[0].rstrip(".") if details else "not a plain file of tensors"
        return f"refused: pickled objects other than tensors are never loaded; {detail[:1].lower()}{detail[1:]}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first.split('. ')[0].rstrip('.')}" if first else type(e).__name__
