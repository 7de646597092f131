"""Plain names: one check for every name that becomes a folder or file name."""

from __future__ import annotations

import pytest

from carvana_seg.names import PlainNameError, check_plain_name


def test_plain_names_pass_and_the_check_is_reusable():
    for name in ("unet_res-192.v2", "A1", "..a", "a..b"):
        assert check_plain_name(name, "recipe name") == name
    with pytest.raises(PlainNameError, match=r"--out: '\.\./x' is not a plain name"):
        check_plain_name("../x", "--out")
    with pytest.raises(PlainNameError, match="--out: expected a non-empty name"):
        check_plain_name("", "--out")
