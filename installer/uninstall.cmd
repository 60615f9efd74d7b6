@echo off
rem Removes the lorelayd service and its programs. The configuration and log
rem in %ProgramData%\lorelay are kept; "uninstall.cmd /purge" removes them too.
rem Run from an elevated prompt (it checks, and stops if not). Every step
rem says what it removed or failed to remove; the exit status is 1 when
rem anything could not be removed. No || or && here: Wine's cmd runs their
rem right side whatever the left side returned.
setlocal EnableExtensions
net session >nul 2>&1
if errorlevel 1 (
  echo lorelay: uninstall.cmd needs an elevated prompt: open Command Prompt with "Run as administrator" and run it again 1>&2
  exit /b 1
)
set "DEST=%ProgramFiles%\lorelay"
set "DATA=%ProgramData%\lorelay"
set "SVC=lorelayd"
set "FAILED="

sc.exe query %SVC% >nul 2>&1
if errorlevel 1 (
  echo lorelay: service %SVC%: not installed
) else (
  call :stop_service
  call :forget_account
  sc.exe delete %SVC% >nul 2>&1
  if errorlevel 1 (
    echo lorelay: FAILED to delete service %SVC%: sc.exe delete failed 1>&2
    set "FAILED=1"
  ) else (
    echo lorelay: removed service %SVC%
  )
)
call :remove_key "HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\%SVC%" "Event Log source %SVC%"
call :remove_key "HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices\0000C549-FACB-11E6-BD58-64006A7986D3" "hvsock service id for port 50505"
call :remove_file "%DEST%\lorelayd.exe"
call :remove_file "%DEST%\lorelayctl.exe"
if exist "%DEST%" (
  rmdir "%DEST%" 2>nul
  if exist "%DEST%" (
    echo lorelay: FAILED to remove %DEST%: not empty? 1>&2
    set "FAILED=1"
  ) else (
    echo lorelay: removed %DEST%
  )
)
if /i "%~1"=="/purge" if exist "%DATA%" (
  rmdir /s /q "%DATA%" 2>nul
  if exist "%DATA%" (
    echo lorelay: FAILED to remove %DATA% 1>&2
    set "FAILED=1"
  ) else (
    echo lorelay: removed %DATA%: configuration and log
  )
)
if /i not "%~1"=="/purge" if exist "%DATA%" echo lorelay: kept %DATA%: configuration and log; uninstall.cmd /purge removes it
if defined FAILED (
  echo lorelay: uninstall incomplete: see the FAILED lines above 1>&2
  exit /b 1
)
echo lorelay: uninstalled
exit /b 0

:stop_service
sc.exe query %SVC% | find "STOPPED" >nul 2>&1
if not errorlevel 1 exit /b 0
sc.exe stop %SVC% >nul 2>&1
call :wait_stopped
sc.exe query %SVC% | find "STOPPED" >nul 2>&1
if errorlevel 1 (
  echo lorelay: service %SVC% did not stop within 15 s; deleting it anyway: it goes once it stops 1>&2
) else (
  echo lorelay: stopped service %SVC%
)
exit /b 0

rem What install.cmd gave the virtual account NT SERVICE\lorelayd: its
rem Hyper-V Administrators membership and its ACE on the data directory
rem (both would outlive the service as an unknown SID). Best effort: absent
rem when it ran as LocalSystem, and on a system without PowerShell.
:forget_account
powershell.exe -NoProfile -NonInteractive -Command "Remove-LocalGroupMember -SID S-1-5-32-578 -Member 'NT SERVICE\%SVC%' -ErrorAction SilentlyContinue" >nul 2>&1
if exist "%DATA%" icacls "%DATA%" /remove "NT SERVICE\%SVC%" /q >nul 2>&1
exit /b 0

rem :remove_key KEY DESCRIPTION: only a key that is there is reported.
:remove_key
reg query "%~1" >nul 2>&1
if errorlevel 1 exit /b 0
reg delete "%~1" /f >nul 2>&1
reg query "%~1" >nul 2>&1
if errorlevel 1 (
  echo lorelay: removed %~2
) else (
  echo lorelay: FAILED to remove %~2: %~1 1>&2
  set "FAILED=1"
)
exit /b 0

rem :remove_file PATH
:remove_file
if not exist "%~1" exit /b 0
del /f /q "%~1" >nul 2>&1
if exist "%~1" (
  echo lorelay: FAILED to remove %~1: in use? 1>&2
  set "FAILED=1"
) else (
  echo lorelay: removed %~1
)
exit /b 0

:wait_stopped
for /l %%i in (1,1,15) do (
  sc.exe query %SVC% | find "STOPPED" >nul 2>&1
  if not errorlevel 1 exit /b 0
  ping -n 2 127.0.0.1 >nul 2>&1
)
exit /b 0
