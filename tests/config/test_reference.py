from pathlib import Path

from streamtap.config.reference import config_reference
from streamtap.plugins import PLUGINS


def test_readme_holds_the_current_config_reference():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert config_reference(PLUGINS) in readme, (
        "README's config reference is out of date: regenerate it with "
        "`streamtap config-reference` and paste it between the config-reference markers"
    )
