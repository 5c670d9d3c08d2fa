"""Operator admin for skills: upload a zip to add one or a new version, grant platform skills, roll back."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import InlineModelAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from skills import archive, services
from skills.models import Skill, SkillVersion
from tenants.admin_mixins import ReadOnlyAdminMixin, make_current_button

# What the change form edits; the rest of a skill comes from its uploads (name, description, versions).
EDITABLE_FIELDS = ["title", "enabled", "user_selectable", "slash_command"]
PLATFORM_FIELDS = ["all_tenants", "granted_to"]


def uploader(request: HttpRequest) -> str:
    return f"admin {request.user.get_username()}"


# The upload is stored by the form's clean(), through the service, because only storing it finds every
# problem (a name already taken is checked under the service's lock); clean() is where a SkillProblem can
# still become an error on the form. Each form does it last, and only when the rest of the form is valid.


class SkillAddForm(forms.ModelForm):
    zip_file = forms.FileField(
        label="Zip file",
        help_text="The skill's folder as a zip; its name and description come from its SKILL.md.",
    )
    uploaded_by = ""  # set per request by SkillAdmin.get_form
    skill: Skill | None = None

    class Meta:
        model = Skill
        fields = ["tenant"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("zip_file")
        if upload is not None and not self.errors:
            try:
                self.skill = services.create_skill(cleaned.get("tenant"), archive.from_zip(upload), self.uploaded_by)
            except archive.SkillProblem as problem:
                self.add_error("zip_file", str(problem))
        return cleaned

    def save(self, commit: bool = True) -> Skill:
        assert self.skill is not None, "save() of an invalid form"
        return self.skill  # stored by clean()

    def save_m2m(self) -> None:
        """Nothing to save: the add form sets no many-to-many field."""


class SkillChangeForm(forms.ModelForm):
    new_version_zip = forms.FileField(
        required=False,
        label="Upload a new version",
        help_text="A zip whose SKILL.md names this skill; it becomes the current version.",
    )
    uploaded_by = ""  # set per request by SkillAdmin.get_form
    new_version: SkillVersion | None = None

    class Meta:
        model = Skill
        fields = [*EDITABLE_FIELDS, *PLATFORM_FIELDS]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        upload = cleaned.get("new_version_zip")
        if upload is not None and not self.errors:
            try:
                self.new_version = services.add_version(self.instance, archive.from_zip(upload), self.uploaded_by)
            except archive.SkillProblem as problem:
                self.add_error("new_version_zip", str(problem))
        return cleaned


class PlatformFilter(admin.SimpleListFilter):
    title = "platform"
    parameter_name = "platform"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Platform skills"), ("no", "Tenants' own skills")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Skill]) -> QuerySet[Skill]:
        if self.value() == "yes":
            return queryset.filter(tenant__isnull=True)
        if self.value() == "no":
            return queryset.filter(tenant__isnull=False)
        return queryset


class SkillVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    """Every version, newest first: read-only, each a download and (unless current) a rollback away.

    Versions come from uploads, and their history stays: deleting the skill deletes its versions.
    """

    model = SkillVersion
    fk_name = "skill"
    extra = 0
    fields = readonly_fields = (
        "number",
        "file_size",
        "short_sha256",
        "uploaded_by",
        "created_at",
        "download",
        "make_current",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[SkillVersion]:
        return super().get_queryset(request).select_related("skill")

    @admin.display(description="size")
    def file_size(self, obj: SkillVersion) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="sha256")
    def short_sha256(self, obj: SkillVersion) -> str:
        return format_html('<code title="{}">{}</code>', obj.sha256, obj.sha256[:12])

    @admin.display(description="zip")
    def download(self, obj: SkillVersion) -> str:
        url = reverse("admin:skills_skill_version_zip", args=[obj.skill_id, obj.pk])
        return format_html('<a href="{}">Download zip</a>', url)

    @admin.display(description="current")
    def make_current(self, obj: SkillVersion) -> str:
        if obj.skill.current_version_id == obj.pk:
            return "current"
        return make_current_button(reverse("admin:skills_skill_make_current", args=[obj.skill_id, obj.pk]))


@admin.register(Skill)
class SkillAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "owner",
        "title",
        "enabled",
        "user_selectable",
        "slash_command",
        "version",
        "updated_at",
    ]
    list_filter = [PlatformFilter, "tenant", "enabled"]
    list_select_related = ["tenant", "current_version"]
    search_fields = ["name", "description"]
    filter_horizontal = ["granted_to"]

    @admin.display(description="tenant", ordering="tenant")
    def owner(self, obj: Skill) -> str:
        return "platform" if obj.tenant is None else f"{obj.tenant} ({obj.tenant_id})"

    @admin.display(description="version", ordering="current_version__number")
    def version(self, obj: Skill) -> int | None:
        return obj.current_version.number if obj.current_version else None

    def get_fieldsets(self, request: HttpRequest, obj: Skill | None = None) -> tuple[tuple[str | None, Any], ...]:
        if obj is None:
            return ((None, {"fields": ["tenant", "zip_file"]}),)
        granted = ("Granted to", {"fields": PLATFORM_FIELDS})
        return (
            (None, {"fields": ["name", "owner", "description", "version"]}),
            ("End users", {"fields": EDITABLE_FIELDS}),
            *([granted] if obj.is_platform else []),
            ("New version", {"fields": ["new_version_zip"]}),
            ("Dates", {"fields": ["created_at", "updated_at"]}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Skill | None = None) -> list[str]:
        return [] if obj is None else ["name", "owner", "description", "version", "created_at", "updated_at"]

    def get_inlines(self, request: HttpRequest, obj: Skill | None) -> list[type[InlineModelAdmin]]:
        return [] if obj is None else [SkillVersionInline]

    def get_form(self, request: HttpRequest, obj: Skill | None = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = SkillAddForm if obj is None else SkillChangeForm
        form = super().get_form(request, obj, change=change, **kwargs)
        assert issubclass(form, SkillAddForm | SkillChangeForm)
        form.uploaded_by = uploader(request)  # a class made for this request (modelform_factory)
        return form

    def save_model(self, request: HttpRequest, obj: Skill, form: forms.ModelForm, change: bool) -> None:
        if not change:
            return  # stored by SkillAddForm.clean()
        # Only what the form edits: an upload, or another operator's Make current, may have moved
        # current_version and description since this instance was read.
        edited = [name for name in [*EDITABLE_FIELDS, "all_tenants"] if name in form.fields]
        obj.save(update_fields=[*edited, "updated_at"])
        version = getattr(form, "new_version", None)
        if version is not None:
            self.message_user(request, f"Uploaded version {version.number}; it is now current.", messages.SUCCESS)

    # --- Versions: download, make current ---------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        version_zip = self.admin_site.admin_view(self.version_zip_view)
        make_current = self.admin_site.admin_view(require_POST(self.make_current_view))
        # Before the defaults: their catch-all `<path:object_id>/` would swallow these.
        return [
            path("<int:object_id>/versions/<int:version_id>/zip/", version_zip, name="skills_skill_version_zip"),
            path(
                "<int:object_id>/versions/<int:version_id>/make-current/",
                make_current,
                name="skills_skill_make_current",
            ),
            *super().get_urls(),
        ]

    def version_of(self, request: HttpRequest, object_id: int, version_id: int) -> SkillVersion:
        """The skill's version, for a user who may change the skill; another skill's version is 404."""
        skill = get_object_or_404(self.get_queryset(request), pk=object_id)
        if not self.has_change_permission(request, skill):
            raise PermissionDenied
        return get_object_or_404(skill.versions.all(), pk=version_id)

    def version_zip_view(self, request: HttpRequest, object_id: int, version_id: int) -> StreamingHttpResponse:
        version = self.version_of(request, object_id, version_id)
        response = StreamingHttpResponse(services.version_zip(version), content_type="application/zip")
        response["Content-Disposition"] = content_disposition_header(
            as_attachment=True, filename=f"{version.skill.name}-v{version.number}.zip"
        )
        return response

    def make_current_view(self, request: HttpRequest, object_id: int, version_id: int) -> HttpResponseRedirect:
        version = self.version_of(request, object_id, version_id)
        skill = services.make_current(version)
        message = f"Made version {version.number} current."
        self.log_change(request, skill, message)
        self.message_user(request, f"{skill}: {message}", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:skills_skill_change", args=[skill.pk]))
