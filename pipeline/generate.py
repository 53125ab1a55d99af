"""Sample data: realistic, deterministic patients, visits and prescriptions, in any quantity.

Replaces the original application's ``initialAppData``::

    python -m pipeline.generate --database-url URL --patients 100            # a demo
    python -m pipeline.generate --database-url URL --patients 200000         # ~1,000,000 prescriptions
    python -m pipeline.generate --database-url URL --fixture --patients 0    # the original's 8 patients

How it stays fast: names, hospitals and doctors are drawn with Faker once into small pools, and every
row is then assembled from those pools with a seeded ``random.Random`` (no Faker call per row). Rows
are streamed to the server in COPY text format, chunk by chunk, so the client builds the next chunk
while the server stores the previous one. Patients go through a temporary staging table first, where
generated card numbers that happen to equal an existing live one are replaced before the insert.
Visits and prescriptions are copied straight into their tables with explicit ids: COPY takes the
given values of an identity column even when it is GENERATED ALWAYS, and those tables have no
value to check beforehand. Triggers, CHECK constraints, foreign keys and indexes apply to every row
as for any insert; the database is the judge of validity.

Determinism: the same seed, sizes, ``as_of`` date and starting ids (the tables' current maximum ids)
give the same rows, byte for byte (with the pinned Faker version). Ids continue after the current
maximum (or the sequence's last value, if higher), so running the generator again appends. The three
tables are locked against concurrent writes (SHARE ROW EXCLUSIVE: reads go on) for the duration,
and the whole load is one transaction: all rows or none.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import random
import sys
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "original_patients.json"
# Dates are relative to this day, not to today, so that a seed always gives the same data.
DEFAULT_AS_OF = date(2025, 6, 30)
HISTORY_YEARS = 10  # visits fall within the last ten years before as_of (and after birth)
CHUNK_ROWS = 10_000  # rows per COPY chunk: small enough for client and server to overlap
PROGRESS_MIN_ROWS = 20_000  # no progress bar below this many rows
ANALYZE_MIN_ROWS = 50_000  # loads of this many rows end with ANALYZE (fresh planner statistics)

# --- built-in clinical vocabulary -------------------------------------------------------------------

# name -> dose instructions (each at most 50 characters, like the names).
MEDICINES: dict[str, tuple[str, ...]] = {
    "Paracetamol": ("500 mg every 6 hours as needed", "1 g every 6 hours as needed, max 4 g/day"),
    "Ibuprofen": ("400 mg three times daily after meals", "200 mg every 6 hours as needed"),
    "Naproxen": ("250 mg twice daily after meals", "500 mg twice daily after meals"),
    "Diclofenac": ("50 mg twice daily after meals", "25 mg three times daily after meals"),
    "Diclofenac gel 1%": ("Apply to the painful area three times daily",),
    "Oseltamivir": ("75 mg twice daily for 5 days",),
    "Favipiravir": ("1800 mg twice on day 1, then 800 mg twice daily",),
    "Dextromethorphan": ("15 mg three times daily as needed", "30 mg at bedtime"),
    "Chlorpheniramine": ("4 mg three times daily", "4 mg at bedtime"),
    "Pseudoephedrine": ("60 mg every 6 hours as needed",),
    "Ambroxol": ("30 mg three times daily",),
    "Bromhexine": ("8 mg three times daily",),
    "Amoxicillin": ("500 mg three times daily for 7 days", "1 g twice daily for 7 days"),
    "Amoxicillin-clavulanate": ("1 g twice daily for 7 days", "625 mg three times daily for 7 days"),
    "Azithromycin": ("500 mg once daily for 3 days", "500 mg on day 1, then 250 mg daily for 4 days"),
    "Penicillin V": ("500 mg four times daily for 10 days",),
    "Cephalexin": ("500 mg four times daily for 7 days",),
    "Dicloxacillin": ("500 mg four times daily for 7 days",),
    "Clarithromycin": ("500 mg twice daily for 14 days",),
    "Metronidazole": ("400 mg three times daily for 7 days", "500 mg twice daily for 14 days"),
    "Ciprofloxacin": ("500 mg twice daily for 7 days", "250 mg twice daily for 3 days"),
    "Nitrofurantoin": ("100 mg twice daily for 5 days",),
    "Fosfomycin": ("3 g single dose at bedtime",),
    "Doxycycline": ("100 mg twice daily for 7 days",),
    "Ceftriaxone": ("2 g intravenously once daily",),
    "Salbutamol inhaler": ("2 puffs every 4-6 hours as needed",),
    "Budesonide inhaler": ("200 mcg twice daily",),
    "Tiotropium inhaler": ("18 mcg once daily",),
    "Prednisolone": ("40 mg once daily for 5 days", "30 mg once daily for 5 days"),
    "Oral rehydration salts": ("1 sachet in 200 ml water after each loose stool",),
    "Loperamide": ("4 mg at first, then 2 mg after each loose stool",),
    "Domperidone": ("10 mg three times daily before meals",),
    "Omeprazole": ("20 mg once daily before breakfast", "20 mg twice daily before meals"),
    "Antacid suspension": ("15 ml after meals and at bedtime",),
    "Simethicone": ("80 mg after meals",),
    "Amlodipine": ("5 mg once daily", "10 mg once daily"),
    "Losartan": ("50 mg once daily", "100 mg once daily"),
    "Enalapril": ("5 mg twice daily", "10 mg once daily"),
    "Hydrochlorothiazide": ("25 mg once daily in the morning",),
    "Metformin": ("500 mg twice daily with meals", "850 mg twice daily with meals", "1 g twice daily with meals"),
    "Glipizide": ("5 mg once daily before breakfast",),
    "Sitagliptin": ("100 mg once daily",),
    "Insulin glargine": ("10 units subcutaneously at bedtime",),
    "Simvastatin": ("20 mg once daily at bedtime", "40 mg once daily at bedtime"),
    "Atorvastatin": ("20 mg once daily", "40 mg once daily"),
    "Levothyroxine": ("50 mcg once daily before breakfast", "100 mcg once daily before breakfast"),
    "Furosemide": ("40 mg once daily in the morning",),
    "Bisoprolol": ("2.5 mg once daily", "5 mg once daily"),
    "Spironolactone": ("25 mg once daily",),
    "Warfarin": ("3 mg once daily, adjusted to INR",),
    "Aspirin": ("81 mg once daily after breakfast",),
    "Tamsulosin": ("0.4 mg once daily after dinner",),
    "Sumatriptan": ("50 mg at onset, may repeat after 2 hours",),
    "Amitriptyline": ("10 mg at bedtime", "25 mg at bedtime"),
    "Tolperisone": ("50 mg three times daily",),
    "Orphenadrine": ("100 mg twice daily",),
    "Colchicine": ("0.6 mg twice daily",),
    "Allopurinol": ("100 mg once daily", "300 mg once daily"),
    "Glucosamine": ("1500 mg once daily",),
    "Cetirizine": ("10 mg once daily", "10 mg at bedtime"),
    "Loratadine": ("10 mg once daily",),
    "Fluticasone nasal spray": ("2 sprays in each nostril once daily",),
    "Saline nasal spray": ("2 sprays in each nostril three times daily",),
    "Hydrocortisone cream 1%": ("Apply thinly twice daily",),
    "Calamine lotion": ("Apply to the rash three times daily",),
    "Chloramphenicol eye drops": ("1 drop in the affected eye every 2 hours",),
    "Acyclovir": ("800 mg five times daily for 7 days", "400 mg five times daily for 5 days"),
    "Gabapentin": ("300 mg three times daily",),
    "Ferrous sulfate": ("200 mg once daily before breakfast", "200 mg twice daily"),
    "Folic acid": ("5 mg once daily",),
    "Sertraline": ("50 mg once daily in the morning",),
    "Fluoxetine": ("20 mg once daily in the morning",),
    "Propranolol": ("10 mg three times daily as needed",),
    "Melatonin": ("2 mg one hour before bedtime",),
    "Vitamin B complex": ("1 tablet once daily",),
}

# (diagnosis, symptom, relative frequency, treatment days (min, max) or None if chronic, medicines)
CONDITIONS: tuple[tuple[str, str, int, tuple[int, int] | None, tuple[str, ...]], ...] = (
    ("Influenza", "Fever, cough, sore throat and muscle aches", 8, (5, 10),
     ("Oseltamivir", "Paracetamol", "Dextromethorphan")),
    ("Common cold", "Runny nose, sneezing and mild sore throat", 10, (3, 7),
     ("Paracetamol", "Chlorpheniramine", "Pseudoephedrine", "Saline nasal spray")),
    ("Acute pharyngitis", "Sore throat, pain on swallowing and fever", 6, (5, 10),
     ("Amoxicillin", "Paracetamol")),
    ("Streptococcal tonsillitis", "Severe sore throat, swollen tonsils and fever", 3, (7, 10),
     ("Penicillin V", "Paracetamol")),
    ("Acute bronchitis", "Productive cough and chest discomfort for a week", 5, (7, 21),
     ("Ambroxol", "Bromhexine", "Dextromethorphan", "Salbutamol inhaler")),
    ("Community-acquired pneumonia", "Fever, productive cough and shortness of breath", 2, (7, 14),
     ("Amoxicillin-clavulanate", "Azithromycin", "Paracetamol")),
    ("Asthma exacerbation", "Wheezing, chest tightness and shortness of breath", 3, (5, 14),
     ("Salbutamol inhaler", "Budesonide inhaler", "Prednisolone")),
    ("COPD exacerbation", "Worsening breathlessness and increased sputum", 2, (7, 14),
     ("Salbutamol inhaler", "Tiotropium inhaler", "Prednisolone", "Amoxicillin")),
    ("COVID-19", "Fever, cough, sore throat and loss of smell", 4, (5, 10),
     ("Favipiravir", "Paracetamol", "Dextromethorphan")),
    ("Dengue fever", "High fever, headache, pain behind the eyes and rash", 3, (7, 14),
     ("Paracetamol", "Oral rehydration salts")),
    ("Acute gastroenteritis", "Watery diarrhoea, vomiting and abdominal cramps", 7, (2, 5),
     ("Oral rehydration salts", "Domperidone", "Loperamide")),
    ("Food poisoning", "Nausea, vomiting and diarrhoea a few hours after a meal", 3, (1, 3),
     ("Oral rehydration salts", "Domperidone")),
    ("Gastroesophageal reflux disease", "Heartburn and acid regurgitation after meals", 5, (28, 56),
     ("Omeprazole", "Antacid suspension", "Simethicone")),
    ("Peptic ulcer", "Burning epigastric pain, worse on an empty stomach", 2, (14, 56),
     ("Omeprazole", "Amoxicillin", "Clarithromycin", "Metronidazole")),
    ("Essential hypertension", "Occasional headache; high blood pressure at check-up", 9, None,
     ("Amlodipine", "Losartan", "Enalapril", "Hydrochlorothiazide")),
    ("Type 2 diabetes mellitus", "Increased thirst, frequent urination and fatigue", 7, None,
     ("Metformin", "Glipizide", "Sitagliptin", "Insulin glargine")),
    ("Dyslipidaemia", "No symptoms; high LDL cholesterol on a routine blood test", 6, None,
     ("Simvastatin", "Atorvastatin")),
    ("Hypothyroidism", "Fatigue, weight gain and feeling cold", 2, None, ("Levothyroxine",)),
    ("Chronic heart failure", "Breathlessness on exertion and swollen ankles", 1, None,
     ("Furosemide", "Bisoprolol", "Spironolactone", "Enalapril")),
    ("Atrial fibrillation", "Palpitations and light-headedness", 1, None, ("Warfarin", "Bisoprolol")),
    ("Coronary artery disease", "Chest pain on exertion, relieved by rest", 1, None,
     ("Aspirin", "Atorvastatin", "Bisoprolol")),
    ("Urinary tract infection", "Burning on urination and a frequent urge to urinate", 5, (3, 7),
     ("Nitrofurantoin", "Fosfomycin", "Ciprofloxacin")),
    ("Acute pyelonephritis", "Fever, flank pain and painful urination", 1, (10, 14),
     ("Ceftriaxone", "Ciprofloxacin", "Paracetamol")),
    ("Kidney stone", "Severe colicky flank pain radiating to the groin", 2, (7, 28),
     ("Diclofenac", "Tamsulosin")),
    ("Hand, foot and mouth disease", "Fever, mouth ulcers and a rash on the hands and feet", 1, (7, 10),
     ("Paracetamol",)),
    ("Migraine", "Throbbing one-sided headache with nausea and light sensitivity", 4, (1, 3),
     ("Sumatriptan", "Ibuprofen", "Domperidone")),
    ("Tension-type headache", "Band-like headache after long hours at the computer", 4, (3, 7),
     ("Paracetamol", "Ibuprofen", "Amitriptyline")),
    ("Lumbar muscle strain", "Lower back pain after lifting a heavy box", 6, (7, 14),
     ("Ibuprofen", "Tolperisone", "Orphenadrine", "Diclofenac gel 1%")),
    ("Knee osteoarthritis", "Knee pain and stiffness, worse when climbing stairs", 4, (30, 90),
     ("Paracetamol", "Diclofenac gel 1%", "Glucosamine", "Naproxen")),
    ("Acute gout", "Sudden severe pain and swelling of the big toe", 2, (7, 14),
     ("Colchicine", "Naproxen", "Allopurinol")),
    ("Ankle sprain", "Ankle pain and swelling after twisting it", 3, (7, 21),
     ("Ibuprofen", "Diclofenac gel 1%")),
    ("Allergic rhinitis", "Sneezing, itchy eyes and a blocked nose", 6, (14, 30),
     ("Cetirizine", "Loratadine", "Fluticasone nasal spray")),
    ("Acute sinusitis", "Facial pain, blocked nose and thick nasal discharge", 3, (7, 14),
     ("Amoxicillin", "Pseudoephedrine", "Saline nasal spray")),
    ("Acute otitis media", "Ear pain and fever", 2, (5, 10), ("Amoxicillin", "Paracetamol")),
    ("Allergic conjunctivitis", "Red, itchy and watery eyes", 2, (5, 10),
     ("Chloramphenicol eye drops", "Cetirizine")),
    ("Atopic dermatitis", "Itchy, dry, red patches on the elbows and knees", 3, (14, 28),
     ("Hydrocortisone cream 1%", "Cetirizine")),
    ("Acute urticaria", "Itchy raised welts all over the body", 3, (5, 14), ("Cetirizine", "Loratadine")),
    ("Cellulitis", "Red, warm, swollen and painful skin on the lower leg", 2, (7, 14),
     ("Dicloxacillin", "Cephalexin", "Paracetamol")),
    ("Chickenpox", "Itchy blister-like rash and fever", 1, (7, 10),
     ("Acyclovir", "Calamine lotion", "Chlorpheniramine")),
    ("Herpes zoster", "Painful band of blisters on one side of the chest", 1, (7, 28), ("Acyclovir", "Gabapentin")),
    ("Scrub typhus", "Fever, headache and a black eschar on the skin", 1, (7, 10), ("Doxycycline", "Paracetamol")),
    ("Leptospirosis", "Fever, calf pain and red eyes after wading through floodwater", 1, (7, 10),
     ("Doxycycline", "Paracetamol")),
    ("Iron deficiency anaemia", "Tiredness, pale skin and dizziness", 2, (60, 120),
     ("Ferrous sulfate", "Folic acid", "Vitamin B complex")),
    ("Major depressive disorder", "Low mood, loss of interest and poor sleep", 2, None,
     ("Sertraline", "Fluoxetine")),
    ("Generalised anxiety disorder", "Constant worry, restlessness and palpitations", 2, None,
     ("Sertraline", "Propranolol")),
    ("Insomnia", "Difficulty falling asleep and waking early", 2, (14, 30), ("Melatonin", "Amitriptyline")),
)  # fmt: skip

# Also prescribed at visits with more prescriptions than the condition has medicines.
EXTRA_MEDICINES = ("Paracetamol", "Vitamin B complex", "Omeprazole", "Folic acid")
# Conditions not drawn for visits before the age of 18.
ADULT_CONDITIONS = frozenset({
    "COPD exacerbation", "Gastroesophageal reflux disease", "Peptic ulcer", "Essential hypertension",
    "Type 2 diabetes mellitus", "Dyslipidaemia", "Chronic heart failure", "Atrial fibrillation",
    "Coronary artery disease", "Kidney stone", "Lumbar muscle strain", "Knee osteoarthritis", "Acute gout",
    "Herpes zoster", "Major depressive disorder", "Generalised anxiety disorder", "Insomnia",
})  # fmt: skip
ADULT_AGE_DAYS = 18 * 365

HOSPITALS_EN = (
    "Siriraj Hospital", "Ramathibodi Hospital", "King Chulalongkorn Memorial Hospital", "Rajavithi Hospital",
    "Bumrungrad International Hospital", "Bangkok Hospital", "Samitivej Sukhumvit Hospital", "BNH Hospital",
    "Phyathai 2 Hospital", "Vejthani Hospital", "Police General Hospital", "Thammasat University Hospital",
    "Maharaj Nakorn Chiang Mai Hospital", "Songklanagarind Hospital", "Srinagarind Hospital",
    "Chiang Mai Ram Hospital", "Bangkok Hospital Phuket", "Bangkok Hospital Pattaya",
)  # fmt: skip
# Thai names in Latin letters, as many records hold them.
THAI_FIRST_NAMES_LATIN = (
    "Somchai", "Somsak", "Somporn", "Prasert", "Wichai", "Anan", "Surachai", "Chaiwat", "Kittisak", "Nattapong",
    "Thanakorn", "Pichit", "Sombat", "Arthit", "Weerapong", "Malee", "Suda", "Siriporn", "Kanya", "Nok",
    "Pranee", "Wanida", "Ratana", "Sunee", "Jintana", "Kannika", "Nattaya", "Pimchanok", "Duangjai", "Apinya",
)  # fmt: skip
THAI_LAST_NAMES_LATIN = (
    "Jaidee", "Srisuk", "Saetang", "Wongsawat", "Chaiyaporn", "Rattanakorn", "Sukprasert", "Boonmee",
    "Thongdee", "Phromma", "Kaewmanee", "Suwannarat", "Intharasuk", "Chanthawong", "Siriwat", "Pongpanich",
    "Rungruang", "Sangkhaphan", "Wongsuwan", "Tangsiri", "Kittikun", "Meesuk", "Yodsuwan", "Buranasiri",
)  # fmt: skip

_PATIENT_COLUMNS = ("patient_id", "id_card_num", "first_name", "last_name", "birth_date", "phone_num")
_RECORD_COLUMNS = (
    "medical_record_id", "patient_id", "hospital_name", "doctor_full_name", "diagnosis", "symptom",
    "treatment_start_date", "treatment_end_date",
)  # fmt: skip
_PRESCRIPTION_COLUMNS = ("prescription_id", "medical_record_id", "medicine_name", "dose")
_TABLES = (("patient", "patient_id"), ("medical_record", "medical_record_id"), ("prescription", "prescription_id"))


def _copy_text(value: str) -> str:
    """A value in COPY text format (the pools hold only escaped values)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def scaled_count(count: int, per_item: float) -> int:
    """``count * per_item`` rounded half up: the number of children generated for ``count`` parents."""
    if per_item < 0:
        raise ValueError("a rate per parent must not be negative")
    return math.floor(count * per_item + 0.5)


# --- card numbers ---------------------------------------------------------------------------------

_CARD_SPACE = 8 * 10**11  # 12-digit bodies 1xxxxxxxxxxx .. 8xxxxxxxxxxx (Thai card numbers start with 1-8)
# Weighted digit sums of 3-digit groups for the check digit (weights 13..2 over the 12 body digits).
_CHECK_TABLES = tuple(
    tuple(
        (v // 100) * (13 - 3 * group) + (v // 10 % 10) * (12 - 3 * group) + (v % 10) * (11 - 3 * group)
        for v in range(1000)
    )
    for group in range(4)
)


def _with_check_digit(body: int) -> str:
    """A 12-digit body plus the Thai national ID check digit: a valid 13-digit card number."""
    t0, t1, t2, t3 = _CHECK_TABLES
    total = t0[body // 10**9] + t1[body // 10**6 % 1000] + t2[body // 1000 % 1000] + t3[body % 1000]
    return f"{body}{(11 - total % 11) % 10}"


def valid_card_number(card: str) -> bool:
    """True for 13 digits whose last one is the Thai national ID check digit of the others."""
    return len(card) == 13 and card.isdigit() and _with_check_digit(int(card[:12])) == card


class _CardNumbers:
    """Card numbers derived from patient ids: a seeded bijection, so unique per id and reproducible."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"{seed}/cards")
        multiplier = rng.randrange(1, _CARD_SPACE) | 1
        while multiplier % 5 == 0:
            multiplier += 2
        self.multiplier = multiplier
        self.offset = rng.randrange(_CARD_SPACE)
        self.inverse = pow(multiplier, -1, _CARD_SPACE)
        self.seed = seed

    def for_id(self, patient_id: int) -> str:
        return _with_check_digit(10**11 + (self.multiplier * patient_id + self.offset) % _CARD_SPACE)

    def id_of(self, card: str) -> int:
        """The patient id ``for_id`` maps to this card number (for any id, not only generated ones)."""
        return (int(card[:12]) - 10**11 - self.offset) * self.inverse % _CARD_SPACE

    def replacement(self, patient_id: int, attempt: int) -> str:
        rng = random.Random(f"{self.seed}/{patient_id}/card/{attempt}")
        return _with_check_digit(10**11 + rng.randrange(_CARD_SPACE))


def card_number(patient_id: int, seed: int = 42) -> str:
    """The card number the generator gives patient ``patient_id`` under ``seed`` (unless taken)."""
    return _CardNumbers(seed).for_id(patient_id)


# --- pools ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _pools(seed: int) -> _Pools:
    return _Pools(seed)


class _Pools:
    """Values drawn once with Faker (read-only afterwards); rows are assembled from these."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        thai, english = Faker("th_TH"), Faker("en_US")
        thai.seed_instance(seed)
        english.seed_instance(seed + 1)

        def unique(draw: Callable[[], str], count: int) -> list[str]:
            values = dict.fromkeys(v.strip() for v in (draw() for _ in range(count)))
            return [_copy_text(v) for v in values if v and len(v) <= 50]

        th_male, th_female = unique(thai.first_name_male, 3000), unique(thai.first_name_female, 3000)
        th_last = unique(thai.last_name, 3000)
        en_first, en_last = unique(english.first_name, 3000), unique(english.last_name, 5000)
        self.first_names: list[list[str]] = [
            th_male + th_female, [_copy_text(v) for v in THAI_FIRST_NAMES_LATIN], en_first,
        ]  # fmt: skip
        self.last_names: list[list[str]] = [th_last, [_copy_text(v) for v in THAI_LAST_NAMES_LATIN], en_last]

        provinces = unique(thai.province, 2000)
        random.Random(f"{seed}/hospitals").shuffle(provinces)
        thai_hospitals = [f"โรงพยาบาล{p}" for p in provinces[:40]]
        self.hospitals = [_copy_text(h) for h in HOSPITALS_EN] + thai_hospitals
        # Each hospital has its own doctors: Thai titles at Thai-named hospitals, "Dr." elsewhere.
        rng = random.Random(f"{seed}/doctors")
        self.doctors: list[list[str]] = []
        for index in range(len(self.hospitals)):
            staff: list[str] = []
            while len(staff) < 24:
                if index >= len(HOSPITALS_EN):
                    female = rng.random() < 0.5
                    title, first = ("พญ.", rng.choice(th_female)) if female else ("นพ.", rng.choice(th_male))
                    name = f"{title} {first} {rng.choice(th_last)}"
                elif rng.random() < 0.85:
                    name = f"Dr. {rng.choice(THAI_FIRST_NAMES_LATIN)} {rng.choice(THAI_LAST_NAMES_LATIN)}"
                else:
                    name = f"Dr. {rng.choice(en_first)} {rng.choice(en_last)}"
                if len(name) <= 50 and name not in staff:
                    staff.append(name)
            self.doctors.append(staff)

        # Conditions weighted by frequency; for each: "diagnosis\tsymptom" with occasional nulls.
        self.condition_draw = [i for i, c in enumerate(CONDITIONS) for _ in range(c[2])]
        self.child_condition_draw = [i for i in self.condition_draw if CONDITIONS[i][0] not in ADULT_CONDITIONS]
        self.diagnosis_symptom = [
            (f"{_copy_text(d)}\t{_copy_text(s)}", f"\\N\t{_copy_text(s)}", f"{_copy_text(d)}\t\\N")
            for d, s, *_ in CONDITIONS
        ]
        self.durations = [c[3] for c in CONDITIONS]

        # For each condition, its medicines, then general ones for visits with more prescriptions than
        # that: each medicine as the "name\tdose" choices of a COPY line.
        def choices(medicine: str) -> list[str]:
            return [f"{_copy_text(medicine)}\t{_copy_text(dose)}" for dose in MEDICINES[medicine]]

        self.medicines = [[choices(m) for m in c[4]] for c in CONDITIONS]
        self.extra_medicines = [[choices(m) for m in EXTRA_MEDICINES if m not in c[4]] for c in CONDITIONS]


# --- streaming COPY -------------------------------------------------------------------------------


class _ChunkReader:
    """File-like object for ``copy_expert``: each read() returns the next encoded chunk of rows."""

    def __init__(self, chunks: Iterator[list[str]], on_chunk: Callable[[int], None]) -> None:
        self._chunks = chunks
        self._on_chunk = on_chunk
        self.generate_seconds = 0.0
        self.rows = 0

    def read(self, size: int = -1) -> bytes:
        started = time.perf_counter()
        lines = next(self._chunks, None)
        if lines is None:
            data = b""
        else:
            data = "".join(lines).encode()
            self.rows += len(lines)
        self.generate_seconds += time.perf_counter() - started
        if lines:
            self._on_chunk(len(lines))
        return data


class _Plan:
    """Sizes, first ids and per-parent child counts of one generator run."""

    def __init__(self, start_ids: Sequence[int], patients: int, records: int, prescriptions: int, seed: int) -> None:
        self.first_patient_id, self.first_record_id, self.first_prescription_id = start_ids
        self.patients, self.records, self.prescriptions = patients, records, prescriptions
        key = f"{seed}/{self.first_patient_id}/{self.first_record_id}/{self.first_prescription_id}"
        self.seed_key = key
        # Visits per patient: at least one each when there are enough, the rest spread at random.
        rng = random.Random(f"{key}/counts")
        base = 1 if records >= patients else 0
        self.records_per_patient = _spread(array("l", [base]) * patients, records - base * patients, rng)
        # Prescriptions per visit: spread at random (some visits end without one).
        self.prescriptions_per_record = _spread(array("l", [0]) * records, prescriptions, rng)


def _spread(counts: array, extra: int, rng: random.Random) -> array:
    """Add ``extra`` to ``counts``, one at a time at uniformly random positions (a multinomial draw)."""
    if counts and extra:
        size, rand = len(counts), rng.random
        for _ in range(extra):
            counts[int(rand() * size)] += 1
    return counts


class _Rows:
    """The three row streams, as lists of COPY text lines of at most CHUNK_ROWS rows."""

    def __init__(self, plan: _Plan, pools: _Pools, cards: _CardNumbers, as_of: date) -> None:
        self.plan, self.pools, self.cards = plan, pools, cards
        self.as_of = as_of.toordinal()
        # ISO strings of every day a row can hold: births up to 100 years back, treatments ending after as_of.
        self.first_day = self.as_of - 100 * 366
        self.iso = [date.fromordinal(d).isoformat() for d in range(self.first_day, self.as_of + 400)]
        self.births = array("l", [0]) * plan.patients
        self.conditions = array("B", [0]) * plan.records

    def patients(self) -> Iterator[list[str]]:
        plan, pools, births, iso, card_for = self.plan, self.pools, self.births, self.iso, self.cards.for_id
        rand = random.Random(f"{plan.seed_key}/patients").random
        firsts, lasts = pools.first_names, pools.last_names
        as_of, first_day = self.as_of, self.first_day
        lines: list[str] = []
        for index in range(plan.patients):
            patient_id = plan.first_patient_id + index
            # 70 % Thai script, 20 % Thai in Latin letters, 10 % foreign names.
            r = rand()
            kind = 0 if r < 0.7 else 1 if r < 0.9 else 2
            first, last = firsts[kind], lasts[kind]
            birth = as_of - int(rand() * 90 * 365.25)  # ages 0 to 90
            births[index] = birth
            r = rand()
            if r < 0.05:
                phone = "\\N"
            elif r < 0.12:
                phone = f"02{int(rand() * 10**7):07d}"  # Bangkok landline
            else:
                phone = f"0{'689'[int(rand() * 3)]}{int(rand() * 10**8):08d}"  # mobile
            lines.append(
                f"{patient_id}\t{card_for(patient_id)}\t{first[int(rand() * len(first))]}\t"
                f"{last[int(rand() * len(last))]}\t{iso[birth - first_day]}\t{phone}\n"
            )
            if len(lines) >= CHUNK_ROWS:
                yield lines
                lines = []
        if lines:
            yield lines

    def records(self) -> Iterator[list[str]]:
        plan, pools, births, iso, conditions = self.plan, self.pools, self.births, self.iso, self.conditions
        rand = random.Random(f"{plan.seed_key}/records").random
        hospitals, doctors = pools.hospitals, pools.doctors
        adult_draw, child_draw = pools.condition_draw, pools.child_condition_draw
        texts, durations = pools.diagnosis_symptom, pools.durations
        n_hospitals, n_adult, n_child = len(hospitals), len(adult_draw), len(child_draw)
        as_of, first_day = self.as_of, self.first_day
        window_start = as_of - int(HISTORY_YEARS * 365.25)
        record_id = plan.first_record_id
        lines: list[str] = []
        for index, count in enumerate(plan.records_per_patient):
            if not count:
                continue
            patient_id = plan.first_patient_id + index
            birth = births[index]
            earliest = max(birth, window_start)
            span = as_of - earliest + 1
            home = int(rand() * n_hospitals)  # most visits are to the patient's usual hospital
            for day in sorted([earliest + int(rand() * span) for _ in range(count)]):
                hospital = home if rand() < 0.75 else int(rand() * n_hospitals)
                staff = doctors[hospital]
                if day - birth >= ADULT_AGE_DAYS:
                    condition = adult_draw[int(rand() * n_adult)]
                else:
                    condition = child_draw[int(rand() * n_child)]
                conditions[record_id - plan.first_record_id] = condition
                r = rand()
                text = texts[condition][0 if r < 0.96 else 1 if r < 0.98 else 2]
                duration = durations[condition]
                if duration is None:  # chronic: usually still under treatment
                    end = "\\N" if rand() < 0.7 else iso[day + 30 + int(rand() * 150) - first_day]
                else:
                    low, high = duration
                    end = iso[day + low + int(rand() * (high - low + 1)) - first_day]
                lines.append(
                    f"{record_id}\t{patient_id}\t{hospitals[hospital]}\t{staff[int(rand() * len(staff))]}\t"
                    f"{text}\t{iso[day - first_day]}\t{end}\n"
                )
                record_id += 1
                if len(lines) >= CHUNK_ROWS:
                    yield lines
                    lines = []
        if lines:
            yield lines

    def prescriptions(self) -> Iterator[list[str]]:
        plan, conditions = self.plan, self.conditions
        medicines, extra_medicines = self.pools.medicines, self.pools.extra_medicines
        rand = random.Random(f"{plan.seed_key}/prescriptions").random
        prescription_id = plan.first_prescription_id
        lines: list[str] = []
        for index, count in enumerate(plan.prescriptions_per_record):
            if not count:
                continue
            record_id = plan.first_record_id + index
            condition = conditions[index]
            choices, extras = medicines[condition], extra_medicines[condition]
            n_choices = len(choices)
            start = int(rand() * n_choices)  # the condition's medicines from a random one on, then extras
            for offset in range(count):
                if offset < n_choices:
                    doses = choices[(start + offset) % n_choices]
                else:
                    doses = extras[(offset - n_choices) % len(extras)]
                lines.append(f"{prescription_id}\t{record_id}\t{doses[int(rand() * len(doses))]}\n")
                prescription_id += 1
            if len(lines) >= CHUNK_ROWS:
                yield lines
                lines = []
        if lines:
            yield lines


# --- loading --------------------------------------------------------------------------------------

# Writers wait (readers do not), so ids and card numbers cannot be taken while the load runs.
_HISTORY_TABLES = ("patient", "medical_record", "prescription")
_LOCK = (
    "LOCK TABLE medical_app.patient, medical_app.medical_record, medical_app.prescription IN SHARE ROW EXCLUSIVE MODE"
)


@contextlib.contextmanager
def _transaction(conn: Any, commit: bool) -> Iterator[Any]:
    """A cursor in one transaction: committed at the end if ``commit``, rolled back on any error."""
    autocommit = conn.autocommit
    if autocommit and not commit:
        raise ValueError("commit=False needs a connection with autocommit off")
    if autocommit:
        conn.autocommit = False
    try:
        with conn.cursor() as cur:
            yield cur
        if commit:
            conn.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        if autocommit:
            conn.autocommit = True


def _identifier(name: str) -> str:
    if not name.isidentifier():
        raise ValueError(f"bad identifier {name!r}")
    return name


def _start_ids(cur: Any) -> list[int]:
    """The first free id of each table: past both the largest id and the sequence's last value."""
    ids = []
    for table, column in _TABLES:
        table, column = _identifier(table), _identifier(column)
        cur.execute(
            f"SELECT greatest(coalesce(max({column}), 0), coalesce(pg_sequence_last_value("  # noqa: S608
            f"pg_get_serial_sequence('medical_app.{table}', '{column}')::regclass), 0)) FROM medical_app.{table}"
        )
        ids.append(int(cur.fetchone()[0]) + 1)
    return ids


def _advance_sequences(cur: Any, plan: _Plan) -> None:
    """Point each identity sequence at the last generated id, so the API's inserts continue after it."""
    lasts = (
        plan.first_patient_id + plan.patients - 1,
        plan.first_record_id + plan.records - 1,
        plan.first_prescription_id + plan.prescriptions - 1,
    )
    for (table, column), last, count in zip(
        _TABLES, lasts, (plan.patients, plan.records, plan.prescriptions), strict=True
    ):
        if count:
            cur.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s)", (f"medical_app.{table}", column, last))


def _replace_taken_cards(cur: Any, cards: _CardNumbers, plan: _Plan) -> int:
    """Give staged patients whose card number is already live a free one; return how many changed."""
    cur.execute(
        "SELECT g.patient_id FROM pg_temp.generated_patient g WHERE EXISTS (SELECT FROM medical_app.patient p"
        " WHERE p.id_card_num = g.id_card_num AND p.deleted_timestamp IS NULL) ORDER BY g.patient_id"
    )
    pending = [patient_id for (patient_id,) in cur.fetchall()]
    first, end = plan.first_patient_id, plan.first_patient_id + plan.patients
    attempts = dict.fromkeys(pending, 0)
    chosen: dict[int, str] = {}
    while pending:
        candidates: dict[str, int] = {}
        for patient_id in pending:
            while True:
                attempts[patient_id] += 1
                card = cards.replacement(patient_id, attempts[patient_id])
                # Not the card of another generated patient, nor one already chosen.
                if not first <= cards.id_of(card) < end and card not in candidates and card not in chosen.values():
                    break
            candidates[card] = patient_id
        cur.execute(
            "SELECT id_card_num FROM medical_app.patient WHERE deleted_timestamp IS NULL AND id_card_num = ANY(%s)",
            (list(candidates),),
        )
        taken = {card for (card,) in cur.fetchall()}
        pending = sorted(candidates[card] for card in taken)
        chosen.update((patient_id, card) for card, patient_id in candidates.items() if card not in taken)
    if chosen:
        cur.execute(
            "UPDATE pg_temp.generated_patient g SET id_card_num = v.card"
            " FROM unnest(%s::bigint[], %s::text[]) AS v(patient_id, card) WHERE g.patient_id = v.patient_id",
            (list(chosen), list(chosen.values())),
        )
    return len(chosen)


def _copy(cur: Any, target: str, columns: Sequence[str], reader: _ChunkReader) -> None:
    column_list = ", ".join(_identifier(c) for c in columns)
    cur.copy_expert(f"COPY {target} ({column_list}) FROM STDIN", reader, size=1 << 20)


def generate(
    conn: Any,
    patients: int = 100,
    records_per_patient: float = 2.5,
    prescriptions_per_record: float = 2.0,
    seed: int = 42,
    progress: bool = False,
    *,
    as_of: date | None = None,
    commit: bool = True,
) -> dict[str, Any]:
    """Append generated patients, visits and prescriptions in one transaction; return counts and timings.

    ``patients`` patients get ``round(patients * records_per_patient)`` visits in all (every patient
    at least one when there are enough), which get ``round(visits * prescriptions_per_record)``
    prescriptions in all. ``conn`` is a psycopg2 connection of the schema's owner. With
    ``commit=False`` the caller's transaction is left open (the connection must not be in autocommit).
    ``progress`` shows a bar on stderr when there are at least PROGRESS_MIN_ROWS rows.
    """
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 0:
        raise ValueError("patients must be a non-negative integer")
    as_of = as_of or DEFAULT_AS_OF
    if as_of > date.today():
        raise ValueError("as_of must not be in the future (birth dates would be)")
    records = scaled_count(patients, records_per_patient)
    prescriptions = scaled_count(records, prescriptions_per_record)
    started = time.perf_counter()
    pools = _pools(seed)
    cards = _CardNumbers(seed)
    pools_seconds = time.perf_counter() - started
    phases: dict[str, float] = {}
    total_rows = patients + records + prescriptions
    from tqdm import tqdm

    bar = tqdm(
        total=total_rows, unit=" rows", unit_scale=True, file=sys.stderr, mininterval=0.5,
        disable=not progress or total_rows < PROGRESS_MIN_ROWS,
    )  # fmt: skip
    readers: list[_ChunkReader] = []

    def reader(chunks: Iterator[list[str]]) -> _ChunkReader:
        readers.append(_ChunkReader(chunks, bar.update))
        return readers[-1]

    try:
        with _transaction(conn, commit) as cur:
            mark = time.perf_counter()
            cur.execute(_LOCK)
            plan = _Plan(_start_ids(cur), patients, records, prescriptions, seed)
            rows = _Rows(plan, pools, cards, as_of)
            phases["prepare"] = time.perf_counter() - mark

            # Versions (migration 0006) are written set-based after the bulk load rather than row by row by
            # the history trigger, which is off for this transaction only (ALTER TABLE is transactional).
            for table in _HISTORY_TABLES:
                cur.execute(f"ALTER TABLE medical_app.{table} DISABLE TRIGGER {table}_history")

            mark = time.perf_counter()
            bar.set_description("patients")
            cur.execute(
                "CREATE TEMP TABLE generated_patient (patient_id bigint, id_card_num text, first_name text,"
                " last_name text, birth_date date, phone_num text) ON COMMIT DROP"
            )
            _copy(cur, "pg_temp.generated_patient", _PATIENT_COLUMNS, reader(rows.patients()))
            replaced = _replace_taken_cards(cur, cards, plan)
            columns = ", ".join(_PATIENT_COLUMNS)
            cur.execute(
                f"INSERT INTO medical_app.patient ({columns}) OVERRIDING SYSTEM VALUE"  # noqa: S608
                f" SELECT {columns} FROM pg_temp.generated_patient ORDER BY patient_id"
            )
            cur.execute("DROP TABLE pg_temp.generated_patient")
            phases["patient"] = time.perf_counter() - mark

            mark = time.perf_counter()
            bar.set_description("medical records")
            _copy(cur, "medical_app.medical_record", _RECORD_COLUMNS, reader(rows.records()))
            phases["medical_record"] = time.perf_counter() - mark

            mark = time.perf_counter()
            bar.set_description("prescriptions")
            _copy(cur, "medical_app.prescription", _PRESCRIPTION_COLUMNS, reader(rows.prescriptions()))
            phases["prescription"] = time.perf_counter() - mark

            mark = time.perf_counter()
            first_ids = (plan.first_patient_id, plan.first_record_id, plan.first_prescription_id)
            for table, first_id in zip(_HISTORY_TABLES, first_ids, strict=True):
                cur.execute("SELECT medical_app.keep_current_versions(%s, %s, 'database:' || session_user)",
                            (table, first_id))
                cur.execute(f"ALTER TABLE medical_app.{table} ENABLE TRIGGER {table}_history")
            phases["versions"] = time.perf_counter() - mark

            mark = time.perf_counter()
            _advance_sequences(cur, plan)
            if total_rows >= ANALYZE_MIN_ROWS:
                cur.execute("ANALYZE medical_app.patient, medical_app.medical_record, medical_app.prescription")
            phases["finish"] = time.perf_counter() - mark
        phases["commit"] = time.perf_counter() - mark - phases["finish"]
    finally:
        bar.close()
    loaded = [r.rows for r in readers]
    if loaded != [patients, records, prescriptions]:  # a bug here, not in the data: never silently short
        raise RuntimeError(f"generated {loaded} rows, planned {[patients, records, prescriptions]}")
    generate_seconds = pools_seconds + sum(r.generate_seconds for r in readers)
    total = time.perf_counter() - started
    return {
        "patients": patients,
        "medical_records": records,
        "prescriptions": prescriptions,
        "first_ids": {
            "patient": plan.first_patient_id,
            "medical_record": plan.first_record_id,
            "prescription": plan.first_prescription_id,
        },
        "seed": seed,
        "as_of": as_of.isoformat(),
        "card_numbers_replaced": replaced,
        "seconds": round(total, 3),
        # Client time building rows (pools included); the rest is mostly waiting for the server.
        "generate_seconds": round(generate_seconds, 3),
        "database_seconds": round(total - generate_seconds, 3),
        "phases": {name: round(value, 3) for name, value in phases.items()},
    }


# --- the original's sample patients --------------------------------------------------------------


def load_fixture(conn: Any, path: Path | str = FIXTURE, *, commit: bool = True) -> dict[str, int]:
    """Insert the patients of a fixture file (with their visits and prescriptions) that are not there yet.

    A patient is skipped when a live patient holds its card number, so loading twice adds nothing.
    The file is a JSON list of patients with the /v1 API's field names, each with ``medicalRecords``,
    each of those with ``prescriptions``.
    """
    patients = json.loads(Path(path).read_text(encoding="utf-8"))
    counts = {"patients": 0, "medical_records": 0, "prescriptions": 0, "skipped": 0}
    with _transaction(conn, commit) as cur:
        cur.execute("LOCK TABLE medical_app.patient IN SHARE ROW EXCLUSIVE MODE")
        for patient in patients:
            cur.execute(
                "SELECT 1 FROM medical_app.patient WHERE id_card_num = %s AND deleted_timestamp IS NULL",
                (patient["idCardNum"],),
            )
            if cur.fetchone() is not None:
                counts["skipped"] += 1
                continue
            cur.execute(
                "INSERT INTO medical_app.patient (id_card_num, first_name, last_name, birth_date, phone_num)"
                " VALUES (%s, %s, %s, %s, %s) RETURNING patient_id",
                (patient["idCardNum"], patient["firstName"], patient["lastName"], patient["birthDate"],
                 patient.get("phoneNum")),
            )  # fmt: skip
            patient_id = cur.fetchone()[0]
            counts["patients"] += 1
            for record in patient.get("medicalRecords", []):
                cur.execute(
                    "INSERT INTO medical_app.medical_record (patient_id, hospital_name, doctor_full_name, diagnosis,"
                    " symptom, treatment_start_date, treatment_end_date) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " RETURNING medical_record_id",
                    (patient_id, record["hospitalName"], record["doctorFullName"], record.get("diagnosis"),
                     record.get("symptom"), record["treatmentStartDate"], record.get("treatmentEndDate")),
                )  # fmt: skip
                record_id = cur.fetchone()[0]
                counts["medical_records"] += 1
                for prescription in record.get("prescriptions", []):
                    cur.execute(
                        "INSERT INTO medical_app.prescription (medical_record_id, medicine_name, dose)"
                        " VALUES (%s, %s, %s)",
                        (record_id, prescription["medicineName"], prescription["dose"]),
                    )
                    counts["prescriptions"] += 1
    return counts


# --- command line ---------------------------------------------------------------------------------


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError("must be a non-negative number")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.generate",
        description="Load realistic, deterministic sample patients, visits and prescriptions "
        "(bulk COPY, one transaction; appends after the existing ids).",
        epilog="Prints a JSON summary on stdout. Example: --patients 200000 gives about 500,000 visits "
        "and 1,000,000 prescriptions. Needs the schema owner's connection (LOCK, setval).",
    )
    parser.add_argument(
        "--database-url", default=os.environ.get("MIGRATION_DATABASE_URL") or os.environ.get("DATABASE_URL"),
        help="owner connection URL (default: $MIGRATION_DATABASE_URL, else $DATABASE_URL)",
    )  # fmt: skip
    parser.add_argument(
        "--patients", type=_non_negative_int, metavar="N",
        help="patients to generate (default: 100, or 0 with --fixture)",
    )  # fmt: skip
    parser.add_argument("--records-per-patient", type=_non_negative_float, default=2.5, metavar="X",
                        help="visits per patient on average (default: 2.5)")  # fmt: skip
    parser.add_argument("--prescriptions-per-record", type=_non_negative_float, default=2.0, metavar="X",
                        help="prescriptions per visit on average (default: 2.0)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF, metavar="YYYY-MM-DD",
                        help=f"the day the data ends (default: {DEFAULT_AS_OF})")  # fmt: skip
    parser.add_argument(
        "--fixture",
        action="store_true",
        help=f"also load the original's 8 sample patients ({FIXTURE.name}); skips those present",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url is required (or set MIGRATION_DATABASE_URL or DATABASE_URL)")
    patients = args.patients if args.patients is not None else 0 if args.fixture else 100

    import psycopg2

    summary: dict[str, Any] = {}
    try:
        conn = psycopg2.connect(args.database_url, connect_timeout=10)
        try:
            conn.autocommit = False
            if args.fixture:
                summary["fixture"] = load_fixture(conn, commit=False)
            if patients:
                summary["generated"] = generate(
                    conn, patients, args.records_per_patient, args.prescriptions_per_record, args.seed,
                    not args.quiet, as_of=args.as_of, commit=False,
                )  # fmt: skip
            conn.commit()
        finally:
            conn.close()
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, without the DETAIL lines that could quote patient data
        lines = str(exc).strip().splitlines()
        print(f"generate: error: {lines[0] if lines else type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
