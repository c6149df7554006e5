"""Names that processes of one run share without passing handles around."""


def weight_store_name(run: str) -> str:
    """The weight store's Ray actor name: the driver creates it, learner and actors look it up."""
    return f"orrery-weights-{run}"
