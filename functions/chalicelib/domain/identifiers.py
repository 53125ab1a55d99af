"""How a patient is identified: a Thai national ID, a passport, or both.

The rules written here are the ones every surface (/v1, the original routes, FHIR) applies; the database
holds the formats, the pairing of the passport's two parts and the uniqueness among live patients
(migration 0008).
"""

from __future__ import annotations

import re

NATIONAL_ID_LENGTH = 13
_NATIONAL_ID = re.compile(r"[0-9]{13}")

# ISO 3166-1 alpha-3: the codes passports print as their issuing state.
_ISO_TABLE = """
ABW AFG AGO AIA ALA ALB AND ARE ARG ARM ASM ATA ATF ATG AUS AUT AZE BDI BEL BEN BES BFA BGD BGR
BHR BHS BIH BLM BLR BLZ BMU BOL BRA BRB BRN BTN BVT BWA CAF CAN CCK CHE CHL CHN CIV CMR COD COG
COK COL COM CPV CRI CUB CUW CXR CYM CYP CZE DEU DJI DMA DNK DOM DZA ECU EGY ERI ESH ESP EST ETH
FIN FJI FLK FRA FRO FSM GAB GBR GEO GGY GHA GIB GIN GLP GMB GNB GNQ GRC GRD GRL GTM GUF GUM GUY
HKG HMD HND HRV HTI HUN IDN IMN IND IOT IRL IRN IRQ ISL ISR ITA JAM JEY JOR JPN KAZ KEN KGZ KHM
KIR KNA KOR KWT LAO LBN LBR LBY LCA LIE LKA LSO LTU LUX LVA MAC MAF MAR MCO MDA MDG MDV MEX MHL
MKD MLI MLT MMR MNE MNG MNP MOZ MRT MSR MTQ MUS MWI MYS MYT NAM NCL NER NFK NGA NIC NIU NLD NOR
NPL NRU NZL OMN PAK PAN PCN PER PHL PLW PNG POL PRI PRK PRT PRY PSE PYF QAT REU ROU RUS RWA SAU
SDN SEN SGP SGS SHN SJM SLB SLE SLV SMR SOM SPM SRB SSD STP SUR SVK SVN SWE SWZ SXM SYC SYR TCA
TCD TGO THA TJK TKL TKM TLS TON TTO TUN TUR TUV TWN TZA UGA UKR UMI URY USA UZB VAT VCT VEN VGB
VIR VNM VUT WLF WSM YEM ZAF ZMB ZWE
"""
ISO_COUNTRIES = frozenset(_ISO_TABLE.split())
# Issuers of travel documents that are not ISO countries (ICAO Doc 9303 Part 3): British nationality
# classes, the United Nations, the EU, the Order of Malta, Kosovo, and documents for stateless persons
# and refugees.
ICAO_ISSUERS = frozenset(
    {"GBD", "GBN", "GBO", "GBP", "GBS", "UNO", "UNA", "UNK", "EUE", "XOM", "RKS", "XXA", "XXB", "XXC", "XXX"}
)
PASSPORT_ISSUERS = ISO_COUNTRIES | ICAO_ISSUERS
PASSPORT_NUMBER_PATTERN = r"^[A-Za-z0-9]{5,20}$"

# The rules' messages, the same whichever layer catches a breach.
IDENTIFIED = (
    "a patient needs a Thai national ID (idCardNum) or a passport (passportCountry and passportNumber), or both"
)
PASSPORT_PAIRED = "passportCountry and passportNumber are given together"
NATIONAL_ID_CHECK = "is not a valid Thai national ID: the last digit must be the check digit of the first 12"


def national_id_check_digit(first_twelve: str) -> int:
    """The 13th digit of a Thai national ID: 11 minus the weighted sum (weights 13 down to 2) mod 11, mod 10."""
    total = sum(int(digit) * weight for digit, weight in zip(first_twelve, range(13, 1, -1), strict=True))
    return (11 - total % 11) % 10


def is_national_id(value: str) -> bool:
    """13 ASCII digits whose last one is the check digit of the other twelve."""
    return bool(_NATIONAL_ID.fullmatch(value)) and national_id_check_digit(value[:12]) == int(value[12])


def passport_issuer(value: str) -> str:
    """The issuing state's code, upper-cased, or ValueError."""
    code = value.upper()
    if code not in PASSPORT_ISSUERS:
        raise ValueError("must be the passport's issuing state as an ISO 3166-1 alpha-3 code, e.g. THA")
    return code


def passport_number(value: str) -> str:
    """The document number, upper-cased, or ValueError."""
    if not re.fullmatch(PASSPORT_NUMBER_PATTERN, value):
        raise ValueError("must be 5 to 20 letters (A-Z) and digits, as printed in the passport")
    return value.upper()
