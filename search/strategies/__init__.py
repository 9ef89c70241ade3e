"""Search strategies behind one ask/tell interface (``search.strategies.base.Strategy``)."""
