from pathlib import Path

from streamtap.reference import config_reference


def test_readme_holds_the_current_config_reference():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert config_reference() in readme, (
        "README's config reference is out of date: regenerate it with "
        "`python -m streamtap.reference` and paste it between the config-reference markers"
    )
