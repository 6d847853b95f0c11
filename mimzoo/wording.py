"""How counts read in messages: "1 image", "2 images"; "the image is not readable"."""


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def none_readable(n: int, example: str) -> str:
    return f"the image {example} is not readable" if n == 1 else f"none of the {n} images is readable, e.g. {example}"
