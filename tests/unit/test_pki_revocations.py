"""The revocation list the fleet service reads (``cloud_trainer.pki.Revocations``): serials in hex in any usual
spelling, comments and bad lines skipped, changes picked up without a restart, a removed file revokes nothing."""

from __future__ import annotations

from cloud_trainer.pki import Revocations, main


def test_revocations_read_serials_in_any_spelling_and_follow_the_file(tmp_path, capsys):
    path = tmp_path / "revoked.txt"
    rev = Revocations(path, check_s=0)
    assert not rev.revoked("abcd")  # no file: nothing revoked
    path.write_text("# revoked certificates\n0x00AB:CD  # acme/gw1 stolen\nnot-a-serial\n\n")
    assert rev.revoked("abcd") and not rev.revoked("ab")
    assert main(["revoke", "--dir", str(tmp_path), "--serial", "0F"]) == 0
    assert rev.revoked("f") and rev.revoked("abcd")
    assert main(["revoke", "--dir", str(tmp_path)]) == 2 and "--cert" in capsys.readouterr().err
    path.unlink()
    assert not rev.revoked("abcd") and not rev.revoked("")
