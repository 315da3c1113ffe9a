"""ME/CFS evidence atlas: a nightly, versioned evidence base built from PubMed."""

__version__ = "0.1.0"
