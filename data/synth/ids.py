"""Identifier formats of the synthetic city: resident ID numbers (GB 11643) and USCC codes (GB 32100).

Generation is vectorised (numpy arrays of digits); the scalar validators exist so tests and callers can
check a single value against the same standards without trusting the generator.
"""

from __future__ import annotations

import numpy as np

# GB 11643-1999: weight of position i (0-based, 17 digits) is 2^(17-i) mod 11; sum mod 11 indexes this string.
_ID_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
_ID_CHECK = "10X98765432"

# GB 32100-2015 alphabet: digits and capitals without I, O, Z, S, V (31 symbols); weights 3^i mod 31.
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = np.array([pow(3, i, 31) for i in range(17)], dtype=np.int64)
# GB 11714 organisation code (positions 9-17 of a USCC): 8 body symbols and a check symbol.
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)


def resident_id_check_char(first17: str) -> str:
    """The GB 11643 check character for the first 17 digits of a resident ID number."""
    total = sum(int(c) * int(w) for c, w in zip(first17, _ID_WEIGHTS))
    return _ID_CHECK[total % 11]


def is_valid_resident_id(value: str) -> bool:
    """True if ``value`` is 17 digits plus the right GB 11643 check character (upper-case X)."""
    return (
        isinstance(value, str)
        and len(value) == 18
        and value[:17].isdigit()
        and resident_id_check_char(value[:17]) == value[17]
    )


def uscc_check_char(first17: str) -> str:
    """The GB 32100 check character for the first 17 symbols of a unified social credit code."""
    total = sum(_USCC_VALUE[c] * int(w) for c, w in zip(first17, _USCC_WEIGHTS))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(value: str) -> bool:
    """True if ``value`` is 18 symbols of the GB 32100 alphabet with a valid check character."""
    return (
        isinstance(value, str)
        and len(value) == 18
        and all(c in _USCC_VALUE for c in value)
        and uscc_check_char(value[:17]) == value[17]
    )


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers -> (n, width) array of decimal digits, most significant first."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return (values.astype(np.int64)[:, None] // powers[None, :]) % 10


def _join(digits: np.ndarray) -> np.ndarray:
    """(n, k) digit array -> array of k-character strings."""
    return (digits.astype(np.uint8) + ord("0")).view(f"S{digits.shape[1]}").ravel().astype(str)


def resident_ids(area_codes: np.ndarray, birth_yyyymmdd: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """Full 18-character resident ID numbers from area code (6 digits), birth date (YYYYMMDD) and a
    3-digit sequence whose last digit is odd for men and even for women (the caller sets the parity)."""
    body = np.concatenate(
        [_digits(area_codes, 6), _digits(birth_yyyymmdd, 8), _digits(sequence, 3)], axis=1
    )
    check = (body * _ID_WEIGHTS).sum(axis=1) % 11
    check_chars = np.frombuffer(_ID_CHECK.encode(), dtype="S1")[check].astype(str)
    return np.char.add(_join(body), check_chars)


def usccs(area_codes: np.ndarray, org_numbers: np.ndarray, type_code: int = 1) -> np.ndarray:
    """USCC codes for enterprises: registration authority 9 (market regulation), ``type_code``
    (1 = enterprise), the 6-digit area code, an 8-digit organisation number with its GB 11714 check,
    and the GB 32100 check character. Distinct ``org_numbers`` give distinct codes."""
    n = len(org_numbers)
    org = _digits(org_numbers, 8)
    org_check = 11 - (org * _ORG_WEIGHTS).sum(axis=1) % 11  # 10 -> X, 11 -> 0
    org_check_val = np.where(org_check == 11, 0, org_check)
    org_check_val = np.where(org_check == 10, _USCC_VALUE["X"], org_check_val)
    head = np.column_stack([np.full(n, 9), np.full(n, type_code)])
    values = np.concatenate([head, _digits(area_codes, 6), org, org_check_val[:, None]], axis=1)
    check = (31 - (values * _USCC_WEIGHTS).sum(axis=1) % 31) % 31
    alphabet = np.frombuffer(USCC_ALPHABET.encode(), dtype="S1")
    symbols = np.concatenate([values, check[:, None]], axis=1)
    return alphabet[symbols].view("S18").ravel().astype(str)
