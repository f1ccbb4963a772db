from django.core.files.storage import default_storage
from django.http import HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


def home(request):
    return render(request, "pages/home.html")


@csrf_exempt  # a test fixture's API: the tests post files without a session
@require_POST
def upload(request):
    if "file" not in request.FILES:
        return HttpResponseBadRequest("no file")
    name = default_storage.save(f"uploads/{request.FILES['file'].name}", request.FILES["file"])
    return JsonResponse({"name": name, "url": default_storage.url(name)}, status=201)
