"""Label real data: a labeling project on disk (manifest, image cache, append-only journal), the
headless loop (``dalkit label init|next|import|export|status``), a local labeling page and a Label
Studio round trip.  Every path goes through :class:`~dalkit.label.project.Project`."""

from dalkit.label.journal import Journal
from dalkit.label.project import DEFAULT_METHOD, Project, ProjectConfig

__all__ = ["DEFAULT_METHOD", "Journal", "Project", "ProjectConfig"]
