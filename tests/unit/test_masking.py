import logging

from associate.masking import PiiMaskingFilter, mask_email, mask_mobile, mask_text


def test_mobile_keeps_prefix_and_last_four():
    assert mask_mobile("+91 98765 44424") == "91******4424"


def test_email_keeps_first_letter_and_domain():
    assert mask_email("john.doe@example.com") == "j*******@example.com"


def test_free_text_is_scrubbed():
    text = mask_text("customer 919876544424 / jane@corp.io failed")
    assert "919876544424" not in text and "jane@" not in text
    assert "91******4424" in text and "@corp.io" in text


def test_logging_filter_masks_arguments(caplog):
    logger = logging.getLogger("associate.test")
    logger.addFilter(PiiMaskingFilter())
    with caplog.at_level(logging.INFO, logger="associate.test"):
        logger.info("sent %s", "919876544424")
    assert "919876544424" not in caplog.text


def test_dates_and_times_stay_readable():
    text = "interval [2026-11-24 00:00:00+00:00, 2026-11-25T00:00:00+00:00)"
    assert mask_text(text) == text
