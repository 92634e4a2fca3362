"""The findings gallery: one module per finding of the methods catalog (§3), each with
ID, TITLE, SHORT, PAPER, CLAIM, SETUP, BUDGET (and optionally READING) and `run(ctx) -> Result`.
`python -m experiments.findings` runs them (see __main__.py); docs/findings.md shows them."""

FINDINGS = {
    "F1": "f01_boundary",
    "F1b": "f01b_negative",
    "F2": "f02_vanishing",
    "F3": "f03_forgetting",
    "F4": "f04_ood_diversity",
    "F5": "f05_reft",
    "F6": "f06_capability",
    "F7": "f07_prefix",
    "F8": "f08_lim",
    "F9": "f09_format_reward",
    "F10": "f10_echo",
    "F12": "f12_nft",
    "F13": "f13_sharpening",
    "F14": "f14_kl_posterior",
    "F18": "f18_length",
    "F19": "f19_rlpr",
    "F20": "f20_tricks",
}
"""Finding ID -> module in this package, in the order the gallery lists them."""
