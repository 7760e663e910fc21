from __future__ import annotations

from shared.runtime.logging import mask_iban, mask_personal_data


def test_ibans_are_masked_anywhere_in_a_log_line() -> None:
    line = mask_iban("paid to DE89370400440532013000 from DE89 3704 0044 0532 0130 00")
    assert "370400440532" not in line and "3704 0044" not in line
    assert "3000" in line  # the last four remain, to tell accounts apart


def test_names_and_iban_fields_are_hidden() -> None:
    event = mask_personal_data(
        None,
        "info",
        {"debtor_name": "Anna Schmidt", "viban": "DE92100110010000000001", "order_id": "o-1"},
    )
    assert event["debtor_name"] == "***"
    assert "1001" not in str(event["viban"])[:-4]
    assert event["order_id"] == "o-1"
