"""PubMed and PMC: the E-utilities client, the streaming XML parser and the MEDLINE-text importer."""
